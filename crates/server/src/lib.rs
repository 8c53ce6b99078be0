//! The prewarm service.
