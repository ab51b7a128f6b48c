// Package jsonx checks JSON the way Matrix needs it before anything else
// reads it: well formed, UTF-8 throughout (RFC 8259 section 8.1), no lone
// UTF-16 surrogates in \u escapes (canonical JSON cannot encode them, so
// no other server can hash or sign them), and nested at most MaxDepth
// deep. encoding/json.Valid passes invalid UTF-8 and lone surrogates, and
// takes nesting up to its own limit of 10,000, which the rest of the
// server (and other servers) then choke on.
package jsonx

import (
	"errors"
	"fmt"
	"unicode/utf8"
)

// MaxDepth is the deepest nesting of objects and arrays a request body may
// have. Synapse's canonical JSON encoder, and the Python decoders behind
// it, give up well before the thousands of levels a 64 KiB event can hold.
const MaxDepth = 100

// Error describes where and why a document was refused.
type Error struct {
	Offset int    // byte offset of the problem
	Reason string // what is wrong there
	err    error  // ErrTooDeep, or nil
}

func (e *Error) Error() string { return fmt.Sprintf("%s at byte %d", e.Reason, e.Offset) }

// Unwrap lets errors.Is find ErrTooDeep.
func (e *Error) Unwrap() error { return e.err }

// ErrTooDeep is wrapped by the Error of a document nested too deeply.
var ErrTooDeep = errors.New("nested too deeply")

// Validate checks that data is one JSON value, with optional white space
// around it, nested at most maxDepth deep (a top-level object or array is
// depth 1). It makes a single pass and allocates nothing on success.
func Validate(data []byte, maxDepth int) error {
	s := scanner{data: data, maxDepth: maxDepth}
	s.skipSpace()
	if err := s.value(); err != nil {
		return err
	}
	s.skipSpace()
	if s.pos != len(s.data) {
		return s.fail("data after the top-level value")
	}
	return nil
}

// Valid reports whether data passes Validate with MaxDepth.
func Valid(data []byte) bool { return Validate(data, MaxDepth) == nil }

type scanner struct {
	data     []byte
	pos      int
	depth    int
	maxDepth int
}

func (s *scanner) fail(reason string) error { return &Error{Offset: s.pos, Reason: reason} }

func (s *scanner) skipSpace() {
	for s.pos < len(s.data) {
		switch s.data[s.pos] {
		case ' ', '\t', '\n', '\r':
			s.pos++
		default:
			return
		}
	}
}

// value scans one value. Containers recurse, but never more than maxDepth
// times, so the stack stays small whatever the input.
func (s *scanner) value() error {
	if s.pos >= len(s.data) {
		return s.fail("unexpected end of input")
	}
	switch c := s.data[s.pos]; {
	case c == '{':
		return s.container('}')
	case c == '[':
		return s.container(']')
	case c == '"':
		return s.str()
	case c == '-' || (c >= '0' && c <= '9'):
		return s.number()
	case c == 't':
		return s.literal("true")
	case c == 'f':
		return s.literal("false")
	case c == 'n':
		return s.literal("null")
	default:
		return s.fail("unexpected character")
	}
}

func (s *scanner) container(end byte) error {
	s.depth++
	if s.depth > s.maxDepth {
		return &Error{Offset: s.pos, Reason: fmt.Sprintf("%v (over %d levels)", ErrTooDeep, s.maxDepth), err: ErrTooDeep}
	}
	s.pos++ // '{' or '['
	s.skipSpace()
	if s.pos < len(s.data) && s.data[s.pos] == end {
		s.pos++
		s.depth--
		return nil
	}
	for {
		if end == '}' {
			if s.pos >= len(s.data) || s.data[s.pos] != '"' {
				return s.fail("expected a string key")
			}
			if err := s.str(); err != nil {
				return err
			}
			s.skipSpace()
			if s.pos >= len(s.data) || s.data[s.pos] != ':' {
				return s.fail("expected ':'")
			}
			s.pos++
			s.skipSpace()
		}
		if err := s.value(); err != nil {
			return err
		}
		s.skipSpace()
		if s.pos >= len(s.data) {
			return s.fail("unexpected end of input")
		}
		switch s.data[s.pos] {
		case ',':
			s.pos++
			s.skipSpace()
		case end:
			s.pos++
			s.depth--
			return nil
		default:
			return s.fail("expected ',' or the end of the container")
		}
	}
}

func (s *scanner) literal(word string) error {
	if len(s.data)-s.pos < len(word) || string(s.data[s.pos:s.pos+len(word)]) != word {
		return s.fail("invalid literal")
	}
	s.pos += len(word)
	return nil
}

func (s *scanner) digits() int {
	start := s.pos
	for s.pos < len(s.data) && s.data[s.pos] >= '0' && s.data[s.pos] <= '9' {
		s.pos++
	}
	return s.pos - start
}

func (s *scanner) number() error {
	if s.data[s.pos] == '-' {
		s.pos++
	}
	if s.pos < len(s.data) && s.data[s.pos] == '0' {
		s.pos++
	} else if s.digits() == 0 {
		return s.fail("invalid number")
	}
	if s.pos < len(s.data) && s.data[s.pos] == '.' {
		s.pos++
		if s.digits() == 0 {
			return s.fail("invalid number")
		}
	}
	if s.pos < len(s.data) && (s.data[s.pos] == 'e' || s.data[s.pos] == 'E') {
		s.pos++
		if s.pos < len(s.data) && (s.data[s.pos] == '+' || s.data[s.pos] == '-') {
			s.pos++
		}
		if s.digits() == 0 {
			return s.fail("invalid number")
		}
	}
	return nil
}

// str scans a string: no control characters, valid UTF-8, known escapes,
// and every \u surrogate escape paired (a high one followed at once by a
// low one).
func (s *scanner) str() error {
	s.pos++ // opening quote
	for s.pos < len(s.data) {
		c := s.data[s.pos]
		switch {
		case c == '"':
			s.pos++
			return nil
		case c == '\\':
			if err := s.escape(); err != nil {
				return err
			}
		case c < 0x20:
			return s.fail("control character in string")
		case c < utf8.RuneSelf:
			s.pos++
		default:
			r, size := utf8.DecodeRune(s.data[s.pos:])
			if r == utf8.RuneError && size == 1 {
				return s.fail("invalid UTF-8")
			}
			s.pos += size
		}
	}
	return s.fail("unterminated string")
}

func (s *scanner) escape() error {
	if s.pos+1 >= len(s.data) {
		return s.fail("unterminated escape")
	}
	switch s.data[s.pos+1] {
	case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
		s.pos += 2
		return nil
	case 'u':
	default:
		return s.fail("invalid escape")
	}
	r, ok := s.hex4(s.pos + 2)
	if !ok {
		return s.fail("invalid \\u escape")
	}
	switch {
	case r >= 0xDC00 && r <= 0xDFFF:
		return s.fail("lone low surrogate in \\u escape")
	case r >= 0xD800 && r <= 0xDBFF:
		next := s.pos + 6
		if next+1 >= len(s.data) || s.data[next] != '\\' || s.data[next+1] != 'u' {
			return s.fail("lone high surrogate in \\u escape")
		}
		lo, ok := s.hex4(next + 2)
		if !ok || lo < 0xDC00 || lo > 0xDFFF {
			return s.fail("lone high surrogate in \\u escape")
		}
		s.pos += 12
	default:
		s.pos += 6
	}
	return nil
}

// hex4 reads the four hex digits at i.
func (s *scanner) hex4(i int) (rune, bool) {
	if i+4 > len(s.data) {
		return 0, false
	}
	var r rune
	for _, c := range s.data[i : i+4] {
		switch {
		case c >= '0' && c <= '9':
			r = r<<4 | rune(c-'0')
		case c >= 'a' && c <= 'f':
			r = r<<4 | rune(c-'a'+10)
		case c >= 'A' && c <= 'F':
			r = r<<4 | rune(c-'A'+10)
		default:
			return 0, false
		}
	}
	return r, true
}
