//! Wire types of the prewarm HTTP API.
