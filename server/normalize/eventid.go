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
//	to_channel, error code, event time (Unix milliseconds, decimal)
//
// and, for an event that names no request, its OTPLESS token (the legacy
// UNREACHABLE may come without requestId, and two users' in one
// millisecond must not share an id). Not the phone number or email: a hash
// of one can be reversed by trying them all, and the id outlives the
// retention purge; the token is random.
//
// A byte-identical retry therefore gets the same id, and the receive time
// plays no part, except that a body without a readable time has its receive
// time as event time, so its retries get different ids.
func eventID(e *eventsv1.Event, eventTime time.Time) string {
	fields := []string{
		e.GetRequestId(),
		strconv.Itoa(int(e.GetKind())),
		e.GetStatus(),
		e.GetChannel(),
		e.GetFromChannel(),
		e.GetToChannel(),
		e.GetError().GetCode(),
		strconv.FormatInt(eventTime.UnixMilli(), 10),
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
