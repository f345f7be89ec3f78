package timm

/*
#include <timm.h>
*/
import "C"

import "errors"

// Status is a libtimm status code (TimmStatus in timm.h).
type Status int

// The status codes of timm.h.
const (
	StatusOK              Status = C.TIMM_OK
	StatusInvalidArgument Status = C.TIMM_ERR_INVALID_ARGUMENT
	StatusNotFound        Status = C.TIMM_ERR_NOT_FOUND
	StatusInvalidModel    Status = C.TIMM_ERR_INVALID_MODEL
	StatusUnsupported     Status = C.TIMM_ERR_UNSUPPORTED
	StatusRuntime         Status = C.TIMM_ERR_RUNTIME
	StatusIO              Status = C.TIMM_ERR_IO
	StatusBufferTooSmall  Status = C.TIMM_ERR_BUFFER_TOO_SMALL
	StatusInternal        Status = C.TIMM_ERR_INTERNAL
)

// String is the C name, e.g. "TIMM_ERR_NOT_FOUND".
func (s Status) String() string { return C.GoString(C.timm_status_name(C.int32_t(s))) }

// Error is a failure reported by libtimm: the status and timm_last_error()'s message
// ("TIMM_ERR_NOT_FOUND: ...").
type Error struct {
	Status  Status
	Message string
}

func (e *Error) Error() string {
	if e.Message == "" {
		return e.Status.String()
	}
	return e.Message
}

// Is makes errors.Is(err, timm.ErrNotFound) match any *Error with that status.
func (e *Error) Is(target error) bool {
	t, ok := target.(*Error)
	return ok && t.Message == "" && t.Status == e.Status
}

// Sentinels for errors.Is; they match every *Error of their status.
var (
	ErrInvalidArgument = &Error{Status: StatusInvalidArgument}
	ErrNotFound        = &Error{Status: StatusNotFound}
	ErrInvalidModel    = &Error{Status: StatusInvalidModel}
	ErrUnsupported     = &Error{Status: StatusUnsupported}
	ErrRuntime         = &Error{Status: StatusRuntime}
	ErrIO              = &Error{Status: StatusIO}
	ErrBufferTooSmall  = &Error{Status: StatusBufferTooSmall}
	ErrInternal        = &Error{Status: StatusInternal}
)

// ErrClosed is returned by every method of a Model after Close.
var ErrClosed = errors.New("timm: model is closed")

func invalidArgument(msg string) error {
	return &Error{Status: StatusInvalidArgument, Message: StatusInvalidArgument.String() + ": " + msg}
}
