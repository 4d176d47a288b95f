package platform

import (
	"errors"
	"fmt"
	"os"
	"reflect"
	"strconv"
	"time"

	"github.com/verifyq/verifyq/internal/field"
)

// Decoder is a configuration type that parses its own variable: Load calls
// Decode with the variable's value (or its default), once. Its error says
// what is wrong without repeating the value, which may hold a password; it
// may join several problems, each reported on its own line under the
// variable.
type Decoder interface {
	Decode(value string) error
}

// Tags of a configuration field: `env:"NAME"` is the variable it is read
// from, `default:"VALUE"` the value when the variable is not set. A struct
// field without an env tag (an embedded Common, a group of variables) is
// looked into; a field without a tag that is not a struct is a ready value,
// built by the configuration's Resolve.
const (
	envTag     = "env"
	defaultTag = "default"
)

var (
	decoderType  = reflect.TypeFor[Decoder]()
	durationType = reflect.TypeFor[time.Duration]()
)

// decode sets every variable field of the struct v points to from the
// environment. A variable that does not parse is reported and keeps its
// default, so that the rules across variables judge the others alone.
func decode(v any) []error {
	var errs []error
	for f, name := range variables(reflect.ValueOf(v).Elem()) {
		def, hasDef := f.tag.Lookup(defaultTag)
		value, set := os.LookupEnv(name)
		if !set && !hasDef {
			continue
		}
		if !set {
			value = def
		}
		if err := decodeValue(f.value, value); err != nil {
			errs = append(errs, named(name, err)...)
			f.value.SetZero()
			if set && hasDef {
				_ = decodeValue(f.value, def)
			}
		}
	}
	return errs
}

// fieldOf is one variable field found by variables.
type fieldOf struct {
	value reflect.Value
	tag   reflect.StructTag
}

// variables yields each variable field of the struct s, in order, with the
// name of its variable.
func variables(s reflect.Value) func(yield func(fieldOf, string) bool) {
	return func(yield func(fieldOf, string) bool) {
		var walk func(s reflect.Value) bool
		walk = func(s reflect.Value) bool {
			for i := range s.NumField() {
				sf, v := s.Type().Field(i), s.Field(i)
				name, ok := sf.Tag.Lookup(envTag)
				switch {
				case ok:
					if !yield(fieldOf{v, sf.Tag}, name) {
						return false
					}
				case sf.Type.Kind() == reflect.Struct && sf.IsExported() && !reflect.PointerTo(sf.Type).Implements(decoderType):
					if !walk(v) {
						return false
					}
				}
			}
			return true
		}
		walk(s)
	}
}

// Variables returns the variables of a configuration struct (a value or a
// pointer), in order, each with its default and whether it has one.
func Variables(cfg any) []Variable {
	var out []Variable
	for f, name := range variables(reflect.Indirect(reflect.ValueOf(cfg))) {
		def, ok := f.tag.Lookup(defaultTag)
		out = append(out, Variable{Name: name, Default: def, HasDefault: ok})
	}
	return out
}

// Variable is one variable of a configuration (see Variables).
type Variable struct {
	Name       string
	Default    string
	HasDefault bool
}

// decodeValue parses s into v: with v's Decode, or as a string, bool, int
// or time.Duration. Its errors never repeat s.
func decodeValue(v reflect.Value, s string) error {
	if d, ok := v.Addr().Interface().(Decoder); ok {
		return d.Decode(s)
	}
	switch {
	case v.Type() == durationType:
		d, err := time.ParseDuration(s)
		if err != nil {
			return errors.New("not a duration (e.g. 90s, 10m, 24h)")
		}
		v.SetInt(int64(d))
	case v.Kind() == reflect.String:
		v.SetString(s)
	case v.Kind() == reflect.Bool:
		b, err := strconv.ParseBool(s)
		if err != nil {
			return errors.New("want true or false")
		}
		v.SetBool(b)
	case v.Kind() == reflect.Int:
		n, err := strconv.Atoi(s)
		if err != nil {
			return errors.New("not an integer")
		}
		v.SetInt(int64(n))
	default:
		panic(fmt.Sprintf("platform: no decoding of a %s", v.Type()))
	}
	return nil
}

// named returns each problem joined in err on its own, under the variable
// name: "NAME: problem". A *field.Error's own field name is dropped.
func named(name string, err error) []error {
	var out []error
	for _, leaf := range leaves(err) {
		var fe *field.Error
		if errors.As(leaf, &fe) {
			leaf = fe.Err
		}
		out = append(out, &field.Error{Field: name, Err: leaf})
	}
	return out
}

// leaves flattens the errors joined in err.
func leaves(err error) []error {
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		var out []error
		for _, e := range j.Unwrap() {
			out = append(out, leaves(e)...)
		}
		return out
	}
	return []error{err}
}

// Name returns err with each *field.Error in it, which a domain package
// names after one of its Go fields ("TTL: 500ms is shorter than 1s"),
// reported under the variable of cfg's field of the same name (its env
// tag: "CODE_TTL: ..."). A rule is so written once, in the package that
// owns the setting, and reported under the variable its binary reads. cfg
// is a configuration struct or a pointer to one; its groups are looked into.
func Name(err error, cfg any) error {
	if err == nil {
		return nil
	}
	vars := map[string]string{}
	var walk func(t reflect.Type)
	walk = func(t reflect.Type) {
		for i := range t.NumField() {
			sf := t.Field(i)
			if name, ok := sf.Tag.Lookup(envTag); ok {
				vars[sf.Name] = name
			} else if sf.Type.Kind() == reflect.Struct && sf.IsExported() {
				walk(sf.Type)
			}
		}
	}
	walk(reflect.Indirect(reflect.ValueOf(cfg)).Type())
	return field.Rename(err, vars)
}
