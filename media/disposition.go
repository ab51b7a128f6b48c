package media

// How media is labelled when served, to clients and to other servers alike.
// https://spec.matrix.org/v1.19/client-server-api/#serving-inline-content

import (
	"fmt"
	"mime"
	"strings"
)

// inlineTypes are the content types served inline; anything else is an
// attachment, so a browser never renders it as a page (Synapse's list).
// https://spec.matrix.org/v1.19/client-server-api/#serving-inline-content
var inlineTypes = map[string]bool{
	"text/css": true, "text/plain": true, "text/csv": true,
	"application/json": true, "application/ld+json": true,
	"image/jpeg": true, "image/gif": true, "image/png": true, "image/apng": true,
	"image/webp": true, "image/avif": true,
	"video/mp4": true, "video/webm": true, "video/ogg": true, "video/quicktime": true,
	"audio/mp4": true, "audio/webm": true, "audio/aac": true, "audio/mpeg": true,
	"audio/ogg": true, "audio/wave": true, "audio/wav": true, "audio/x-wav": true,
	"audio/x-pn-wav": true, "audio/flac": true, "audio/x-flac": true,
}

func baseType(contentType string) string {
	t, _, err := mime.ParseMediaType(contentType)
	if err != nil {
		t, _, _ = strings.Cut(contentType, ";")
	}
	return strings.ToLower(strings.TrimSpace(t))
}

// ServedContentType is the stored type, with charset=UTF-8 added to a
// text type that names none, as Synapse does.
func ServedContentType(contentType string) string {
	if strings.HasPrefix(baseType(contentType), "text/") && !strings.Contains(strings.ToLower(contentType), "charset=") {
		return contentType + "; charset=UTF-8"
	}
	return contentType
}

// ContentDisposition is inline for the safe types and attachment for the
// rest, with the file name as an RFC 6266 token when it is one and in
// RFC 5987's extended filename* form otherwise.
func ContentDisposition(contentType, fileName string) string {
	d := "attachment"
	if inlineTypes[baseType(contentType)] {
		d = "inline"
	}
	if fileName == "" {
		return d
	}
	if isToken(fileName) {
		return d + "; filename=" + fileName
	}
	return d + "; filename*=utf-8''" + rfc5987Escape(fileName)
}

// isToken reports whether s is an RFC 2616 token: printable ASCII without
// separators.
func isToken(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c <= 32 || c >= 127 || strings.IndexByte(`()<>@,;:\"/[]?={}`, c) >= 0 {
			return false
		}
	}
	return true
}

// rfc5987Escape percent-encodes every byte but the unreserved characters.
func rfc5987Escape(s string) string {
	// url.PathEscape leaves some sub-delims; QueryEscape turns ' ' into
	// '+'. Encode by hand.
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		if 'A' <= c && c <= 'Z' || 'a' <= c && c <= 'z' || '0' <= c && c <= '9' || strings.IndexByte("-._~", c) >= 0 {
			b.WriteByte(c)
		} else {
			fmt.Fprintf(&b, "%%%02X", c)
		}
	}
	return b.String()
}
