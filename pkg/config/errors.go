package config

import (
	"fmt"
	"slices"
	"strings"
)

// SettingError is a problem with one setting. It names the setting by its
// config-file key, which is its flag's name without the dashes ("vip",
// "service-cidr", "v"): library packages do not know whether a value came
// from a flag or from the file, so only cmd/ words it as a flag (Format).
type SettingError struct {
	// Setting is the config-file key. A setting of one command alone (join
	// and member remove --force, token create --ttl) has no key in the file
	// and is named the same way, by its flag's name without the dashes.
	Setting string
	// Value is the value the message shows: a string is quoted (as given,
	// it may not parse), anything else (an int, a parsed address) printed
	// as is; nil shows none.
	Value any
	// Problem says what is wrong ("is not an IP address"). Other settings
	// it mentions are written {key} and listed in Others, so that they are
	// worded like Setting.
	Problem string
	// Others are the settings Problem mentions.
	Others []string
	// Err is the underlying cause, if any; it follows after a colon.
	Err error

	// hint marks one made by Hint: Problem is the whole message.
	hint bool
}

// Error words the problem with config-file keys: vip "x" is not an IP
// address.
func (e *SettingError) Error() string {
	return e.Format(func(key string) string { return key })
}

// Format words the problem with each setting named by name(key); the
// command line passes a function that returns the flag ("--vip").
func (e *SettingError) Format(name func(key string) string) string {
	var b strings.Builder
	if !e.hint {
		b.WriteString(name(e.Setting))
		switch v := e.Value.(type) {
		case nil:
		case string:
			fmt.Fprintf(&b, " %q", v)
		default:
			fmt.Fprintf(&b, " %v", v)
		}
	}
	if e.Problem != "" {
		p := strings.ReplaceAll(e.Problem, "{"+e.Setting+"}", name(e.Setting))
		for _, o := range e.Others {
			p = strings.ReplaceAll(p, "{"+o+"}", name(o))
		}
		if !e.hint {
			b.WriteString(" ")
		}
		b.WriteString(p)
	}
	if e.Err != nil {
		b.WriteString(": " + e.Err.Error())
	}
	return b.String()
}

func (e *SettingError) Unwrap() error { return e.Err }

// Bare is a Value shown as the user gave it, without quotes: an address,
// range or interface name, which holds no spaces.
type Bare string

// Hint is advice that points to settings, each written {key}: "pass
// another {data-dir}". Library errors end with one where they tell the user
// which setting to change, fmt.Errorf("...: %w; %w", err, Hint(...)), so
// that the command line can name the flag. The first setting is the one the
// error is about (Setting); the rest are Others. Unlike a problem, the hint
// is the whole message: no setting or value goes in front of it.
func Hint(text string) *SettingError {
	e := &SettingError{Problem: text, hint: true}
	for rest := text; ; {
		_, after, ok := strings.Cut(rest, "{")
		if !ok {
			break
		}
		key, tail, ok := strings.Cut(after, "}")
		if !ok {
			break
		}
		if e.Setting == "" {
			e.Setting = key
		} else if key != e.Setting && !slices.Contains(e.Others, key) {
			e.Others = append(e.Others, key)
		}
		rest = tail
	}
	return e
}

// settingList is several errors in one sentence, separated by "; " (where
// errors.Join would put each on its own line).
type settingList []error

func (l settingList) Error() string {
	s := make([]string, len(l))
	for i, e := range l {
		s[i] = e.Error()
	}
	return strings.Join(s, "; ")
}

func (l settingList) Unwrap() []error { return l }

// SettingErrors lists every SettingError in err's tree (errors.Join and
// %w wrapping), outermost first.
func SettingErrors(err error) []*SettingError {
	var out []*SettingError
	var walk func(error)
	walk = func(err error) {
		if err == nil {
			return
		}
		if se, ok := err.(*SettingError); ok {
			out = append(out, se)
		}
		switch u := err.(type) {
		case interface{ Unwrap() error }:
			walk(u.Unwrap())
		case interface{ Unwrap() []error }:
			for _, e := range u.Unwrap() {
				walk(e)
			}
		}
	}
	walk(err)
	return out
}
