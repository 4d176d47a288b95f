package platform

import (
	"errors"
	"reflect"
	"strings"

	"github.com/kelseyhightower/envconfig"

	"github.com/verifyq/verifyq/internal/field"
)

// Decoder is a configuration type that parses its own variable:
// envconfig calls Decode with the variable's value (or its default), once.
// Its error says what is wrong without repeating the value, which may hold
// a password; it may join several problems, each reported on its own line
// under the variable.
type Decoder = envconfig.Decoder

// Tags of a configuration field, envconfig's: `envconfig:"NAME"` is the
// variable it is read from, `default:"VALUE"` the value when the variable
// is not set. A struct field without a tag (an embedded Common, an
// embedded group of variables) is looked into; a ready value, built by the
// configuration's Resolve, is tagged `ignored:"true"`.
const (
	envTag     = "envconfig"
	defaultTag = "default"
	ignoredTag = "ignored"
)

var decoderType = reflect.TypeFor[Decoder]()

// decode sets every variable field of the struct v points to from the
// environment, with envconfig, one variable at a time so that every
// variable that does not parse is reported, not only the first. It
// returns the problems, each under its variable and without its value
// (strconv's errors repeat it; a Decoder's never do), and the names of
// the variables that did not parse.
func decode(v any) (errs []error, failed map[string]bool) {
	for f, name := range variables(reflect.ValueOf(v).Elem()) {
		one := reflect.New(reflect.StructOf([]reflect.StructField{{Name: "V", Type: f.value.Type(), Tag: f.tag}}))
		err := envconfig.Process("", one.Interface())
		if err == nil {
			f.value.Set(one.Elem().Field(0))
			continue
		}
		if failed == nil {
			failed = map[string]bool{}
		}
		failed[name] = true
		var pe *envconfig.ParseError
		switch {
		case !errors.As(err, &pe):
			errs = append(errs, &field.Error{Field: name, Err: err})
		case f.value.Addr().Type().Implements(decoderType):
			errs = append(errs, named(name, pe.Err)...)
			// The default stands in, so that the rules that read the
			// ready value judge the other variables alone.
			if def, ok := f.tag.Lookup(defaultTag); ok {
				_ = f.value.Addr().Interface().(Decoder).Decode(def)
			}
		default:
			errs = append(errs, &field.Error{Field: name, Err: errors.New(kind(pe.TypeName))})
		}
	}
	return errs, failed
}

// speaksOf reports whether err is about one of the variables in names: it
// starts with "NAME:".
func speaksOf(err error, names map[string]bool) bool {
	name, _, ok := strings.Cut(err.Error(), ":")
	return ok && names[name]
}

// kind says in words what a variable of envconfig's type name wants.
func kind(typeName string) string {
	switch typeName {
	case "time.Duration":
		return "not a duration (e.g. 90s, 10m, 24h)"
	case "bool":
		return "want true or false"
	case "int", "*int":
		return "not an integer"
	}
	return "not a valid " + typeName
}

// fieldOf is one variable field found by variables.
type fieldOf struct {
	value reflect.Value
	tag   reflect.StructTag
	name  string // the Go field's name
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
				case sf.Tag.Get(ignoredTag) == "true":
				case ok:
					if !yield(fieldOf{v, sf.Tag, sf.Name}, name) {
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
	for f, name := range variables(reflect.Indirect(reflect.ValueOf(cfg))) {
		vars[f.name] = name
	}
	return field.Rename(err, vars)
}
