package normalize

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"strconv"
	"time"

	eventsv1 "github.com/otpless-events/otpless-events/gen/otpless/events/v1"
)

// eventID returns e's identity: the lowercase hex of the first 16 bytes of
// the SHA-256 of these fields, each preceded by its length as a uvarint so
// that no two lists of fields encode alike:
//
//	request id, kind (enum number, decimal), status, channel, from_channel,
//	to_channel, error code, event time (Unix milliseconds, decimal; empty
//	for a body without a time)
//
// and, for an event that names no request, its OTPLESS token (the legacy
// UNREACHABLE may come without requestId, and two users' in one
// millisecond must not share an id). Not the phone number or email: a hash
// of one can be reversed by trying them all, and the id outlives the
// retention purge; the token is random.
//
// A byte-identical retry therefore gets the same id, and the receive time
// plays no part: a body without a time has its receive time as
// event time, but not in its id, so that its retries are duplicates too.
func eventID(e *eventsv1.Event, eventTime time.Time, timed bool) string {
	at := ""
	if timed {
		at = strconv.FormatInt(eventTime.UnixMilli(), 10)
	}
	fields := []string{
		e.GetRequestId(),
		strconv.Itoa(int(e.GetKind())),
		e.GetStatus(),
		e.GetChannel(),
		e.GetFromChannel(),
		e.GetToChannel(),
		e.GetError().GetCode(),
		at,
	}
	if e.GetRequestId() == "" {
		fields = append(fields, e.GetToken())
	}
	buf := make([]byte, 0, 256)
	for _, f := range fields {
		buf = binary.AppendUvarint(buf, uint64(len(f)))
		buf = append(buf, f...)
	}
	sum := sha256.Sum256(buf)
	return hex.EncodeToString(sum[:16])
}
