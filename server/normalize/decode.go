package normalize

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"unicode/utf16"
	"unicode/utf8"

	eventsv1 "github.com/otpless-events/otpless-events/gen/otpless/events/v1"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/reflect/protoreflect"
)

// ErrInvalidBody means the body is not a JSON object that can be read as an
// OTPLESS webhook. Errors wrapping it name the problem.
var ErrInvalidBody = errors.New("invalid webhook body")

// ErrUnrecognized means the body is a readable JSON object but has no
// eventType, status or notificationType, so it matches no documented payload.
var ErrUnrecognized = errors.New("unrecognized webhook")

// Decode parses one webhook body into the OTPLESS model. Fields it does not
// know are ignored, so that fields OTPLESS adds later do not break ingestion.
// An escaped half of a surrogate pair without its other half reads as U+FFFD.
// Errors wrap ErrInvalidBody.
func Decode(body []byte) (*eventsv1.IngestRequest, error) {
	if req, ok := decodeFast(body); ok {
		return req, nil
	}
	req := new(eventsv1.IngestRequest)
	if err := (protojson.UnmarshalOptions{DiscardUnknown: true}).Unmarshal(replaceLoneSurrogates(body), req); err != nil {
		// protojson rejects what checkBody does (it is strict JSON and
		// checks UTF-8 in every string, skipped ones included), but names it
		// less clearly: checkBody runs only then, so that a valid body is
		// read once.
		if cerr := checkBody(body); cerr != nil {
			return nil, cerr
		}
		return nil, fmt.Errorf("%w: %s", ErrInvalidBody, describeTypeError(body, err))
	}
	return req, nil
}

// replaceLoneSurrogates returns body with every \u escape of half a UTF-16
// surrogate pair that has no other half replaced by \ufffd, of the same
// length, or body itself when it has none. RFC 8259 allows such escapes, and
// JavaScript's JSON.stringify writes them for a string cut in the middle of
// an emoji; protojson refuses them, which would refuse the whole webhook for
// one character, even in a field this service does not read. encoding/json
// reads them as U+FFFD, and so does Decode. Only escapes inside strings are
// touched, so invalid JSON stays invalid, at the same offsets.
func replaceLoneSurrogates(body []byte) []byte {
	if !bytes.Contains(body, []byte(`\u`)) {
		return body
	}
	out, copied := body, false
	inString := false
	for i := 0; i < len(body); i++ {
		switch body[i] {
		case '"':
			inString = !inString
		case '\\':
			if !inString {
				continue
			}
			r, ok := escapeAt(body, i)
			switch {
			case !ok:
				i++ // the escaped byte: an escaped quote ends no string
				continue
			case !utf16.IsSurrogate(r):
			case r < 0xDC00: // the first half: a pair if the second follows
				if low, ok := escapeAt(body, i+6); ok && low >= 0xDC00 && utf16.IsSurrogate(low) {
					i += 6
					break
				}
				fallthrough
			default:
				if !copied {
					out, copied = bytes.Clone(body), true
				}
				copy(out[i:], `\ufffd`)
			}
			i += 5
		}
	}
	return out
}

// escapeAt reads the \u escape at body[i:], reporting false when there is
// none.
func escapeAt(body []byte, i int) (rune, bool) {
	if i+6 > len(body) || body[i] != '\\' || body[i+1] != 'u' {
		return 0, false
	}
	n, err := strconv.ParseUint(string(body[i+2:i+6]), 16, 16)
	if err != nil {
		return 0, false
	}
	return rune(n), true
}

// checkBody rejects what protojson would report less clearly: an empty body,
// invalid UTF-8, invalid JSON and a top-level value that is not an object.
func checkBody(body []byte) error {
	trimmed := bytes.TrimLeft(body, " \t\r\n")
	switch {
	case len(trimmed) == 0:
		return fmt.Errorf("%w: body is empty", ErrInvalidBody)
	case !utf8.Valid(body):
		return fmt.Errorf("%w: not valid UTF-8", ErrInvalidBody)
	case !json.Valid(body):
		return fmt.Errorf("%w: %s", ErrInvalidBody, describeSyntaxError(body))
	case trimmed[0] != '{':
		return fmt.Errorf("%w: expected a JSON object, got %s", ErrInvalidBody, jsonTypeOf(trimmed[0]))
	}
	return nil
}

// describeSyntaxError says where body, which json.Valid rejected, goes wrong.
func describeSyntaxError(body []byte) string {
	err := json.Unmarshal(body, new(json.RawMessage))
	if se, ok := errors.AsType[*json.SyntaxError](err); ok {
		return fmt.Sprintf("not valid JSON: %s at offset %d", se, se.Offset)
	}
	return "not valid JSON"
}

// jsonTypeOf names the type of the JSON value starting with c.
func jsonTypeOf(c byte) string {
	switch c {
	case '{':
		return "an object"
	case '[':
		return "an array"
	case '"':
		return "a string"
	case 't', 'f':
		return "a boolean"
	case 'n':
		return "null"
	}
	return "a number"
}

// describeTypeError explains why protojson rejected body, a valid JSON
// object. protojson reports a value of the wrong JSON type by position only
// ("unexpected token 5"), so body is walked against the IngestRequest schema
// to name the field; other problems (a duplicate field, say) keep protojson's
// own message, which names the field.
func describeTypeError(body []byte, err error) string {
	var tree map[string]any
	if json.Unmarshal(body, &tree) == nil {
		if msg := objectTypeError(tree, (*eventsv1.IngestRequest)(nil).ProtoReflect().Descriptor(), ""); msg != "" {
			return msg
		}
	}
	return err.Error()
}

// objectTypeError returns a message naming the first field of obj whose
// JSON type does not fit md, or "" when all fit. Fields md does not know are
// skipped, as Decode ignores them; null stands for an unset field.
func objectTypeError(obj map[string]any, md protoreflect.MessageDescriptor, prefix string) string {
	fields := md.Fields()
	for i := range fields.Len() {
		fd := fields.Get(i)
		name := fd.JSONName()
		v, ok := obj[name]
		if !ok {
			name = string(fd.Name())
			v, ok = obj[name]
		}
		if !ok || v == nil {
			continue
		}
		if msg := fieldTypeError(fd, v, prefix+name); msg != "" {
			return msg
		}
	}
	return ""
}

func fieldTypeError(fd protoreflect.FieldDescriptor, v any, path string) string {
	if !fd.IsList() {
		return valueTypeError(fd, v, path)
	}
	list, ok := v.([]any)
	if !ok {
		return fmt.Sprintf("%s: expected an array, got %s", path, jsonTypeOfValue(v))
	}
	for i, elem := range list {
		if msg := valueTypeError(fd, elem, fmt.Sprintf("%s[%d]", path, i)); msg != "" {
			return msg
		}
	}
	return ""
}

// valueTypeError checks one value of fd. The webhook schema has only
// string and message fields; google.protobuf.Value takes any JSON.
func valueTypeError(fd protoreflect.FieldDescriptor, v any, path string) string {
	switch fd.Kind() {
	case protoreflect.StringKind:
		if _, ok := v.(string); !ok {
			return fmt.Sprintf("%s: expected a string, got %s", path, jsonTypeOfValue(v))
		}
	case protoreflect.MessageKind:
		if fd.Message().FullName() == "google.protobuf.Value" {
			return ""
		}
		obj, ok := v.(map[string]any)
		if !ok {
			return fmt.Sprintf("%s: expected an object, got %s", path, jsonTypeOfValue(v))
		}
		return objectTypeError(obj, fd.Message(), path+".")
	}
	return ""
}

// jsonTypeOfValue names the JSON type of a value decoded by encoding/json.
func jsonTypeOfValue(v any) string {
	switch v.(type) {
	case map[string]any:
		return "an object"
	case []any:
		return "an array"
	case string:
		return "a string"
	case bool:
		return "a boolean"
	case nil:
		return "null"
	}
	return "a number"
}
