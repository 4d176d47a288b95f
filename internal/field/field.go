// Package field names the setting that a configuration error is about, so
// that a rule is written once, in the domain package that owns it, and each
// binary reports it under the environment variable that sets the field.
//
// A domain package's Validate returns field errors named after its Go
// fields ("TTL: 500ms is shorter than 1s"); a binary renames them with
// Rename ("CODE_TTL: 500ms is shorter than 1s"), the names taken from the
// env tags of its configuration's fields of the same Go names
// (platform.Name), never from a list kept by hand.
package field

import (
	"errors"
	"fmt"
)

// Error is a problem with one field of a configuration.
type Error struct {
	// Field names the field: a Go field name in a domain package, an
	// environment variable once a binary has renamed it.
	Field string
	// Err is the problem, without the field's name. It never repeats a
	// secret.
	Err error
}

func (e *Error) Error() string { return e.Field + ": " + e.Err.Error() }

// Unwrap returns the problem.
func (e *Error) Unwrap() error { return e.Err }

// Errorf returns an *Error about field with a formatted problem.
func Errorf(field, format string, args ...any) error {
	return &Error{Field: field, Err: fmt.Errorf(format, args...)}
}

// Rename returns err with the Field of every *Error in it (err itself, or
// one of the errors joined in it, at any depth) replaced by names[Field],
// when names has it. The result joins err's errors, flattened, in order;
// nil stays nil.
func Rename(err error, names map[string]string) error {
	var out []error
	var walk func(error)
	walk = func(err error) {
		if j, ok := err.(interface{ Unwrap() []error }); ok {
			for _, e := range j.Unwrap() {
				walk(e)
			}
			return
		}
		if fe, ok := err.(*Error); ok { //nolint:errorlint // the tree is walked by hand: each leaf is looked at itself, not what it wraps
			if name, ok := names[fe.Field]; ok {
				err = &Error{Field: name, Err: fe.Err}
			}
		}
		out = append(out, err)
	}
	if err != nil {
		walk(err)
	}
	return errors.Join(out...)
}
