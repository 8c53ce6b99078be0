package prewarm

import (
	"errors"
	"fmt"
	"strings"
)

// Sentinels for errors.Is on an *APIError.
var (
	ErrNotFound     = errors.New("not found")
	ErrConflict     = errors.New("conflict")
	ErrValidation   = errors.New("validation failed")
	ErrUnauthorized = errors.New("unauthorized")
)

// ErrorBody is the API's error shape.
type ErrorBody struct {
	Error   string `json:"error"`
	Details string `json:"details,omitempty"`
	TaskID  string `json:"taskId,omitempty"`
	Status  string `json:"status,omitempty"`
}

// APIError is a non-2xx answer with the API's error body. It matches
// ErrNotFound (404), ErrConflict (409), ErrValidation (400, 413, 422) and
// ErrUnauthorized (401, 403) with errors.Is.
type APIError struct {
	StatusCode int
	Body       ErrorBody
}

func (e *APIError) Error() string {
	if e.Body.Details != "" {
		return fmt.Sprintf("%s: %s (HTTP %d)", e.Body.Error, e.Body.Details, e.StatusCode)
	}
	return fmt.Sprintf("%s (HTTP %d)", e.Body.Error, e.StatusCode)
}

// Is maps the status code to the sentinels.
func (e *APIError) Is(target error) bool {
	switch target {
	case ErrNotFound:
		return e.StatusCode == 404
	case ErrConflict:
		return e.StatusCode == 409
	case ErrValidation:
		return e.StatusCode == 400 || e.StatusCode == 413 || e.StatusCode == 422
	case ErrUnauthorized:
		return e.StatusCode == 401 || e.StatusCode == 403
	}
	return false
}

// TaskFailedError is returned when a waited-for task ended failed or cancelled.
type TaskFailedError struct {
	Task *Task
}

func (e *TaskFailedError) Error() string {
	var nodes []string
	for i, f := range e.Task.FailedNodeDetails {
		if i == 10 {
			break
		}
		nodes = append(nodes, fmt.Sprintf("%s (%s: %s)", f.NodeName, f.Image, f.Reason))
	}
	msg := fmt.Sprintf("task %s %s", e.Task.TaskID, e.Task.Status)
	if e.Task.Reason != nil {
		msg += " (" + *e.Task.Reason + ")"
	}
	if len(nodes) > 0 {
		msg += "; failed nodes: " + strings.Join(nodes, ", ")
	}
	return msg
}
