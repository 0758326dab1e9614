// Package state folds a request's normalized events into its AuthRequest
// snapshot. The fold is pure and order-independent: apart from revision and
// update_time, which the caller sets, the snapshot is a function of the set
// of distinct events (by event_id) that belong to the request. Fold sorts
// the events by (event_time, event_id) and every rule below is stated on
// that set, so arrival order and retried webhooks never change the result.
//
// # Delivery status of one channel
//
// Delivery reports (kind DELIVERY) move a channel along
//
//	(no report) -> SENT -> DELIVERED -> READ -> CLICKED
//	                  \-> FAILED -/
//
// A step is observed at the earliest time a report names it; a later step
// implies every earlier one, which is then marked implied and timed at the
// earliest observed later step. A channel is FAILED when a FAILED report
// exists and no step past SENT was observed; a report of DELIVERED or later
// moves it on. Reports with an unknown status or without a channel move no
// channel: like every event, they count towards event_count and the first
// and last event times, and give their single-valued fields (below).
//
// # Request status
//
//	UNSPECIFIED  no event.
//	IN_PROGRESS  some event, and none of the rules below applies.
//	FAILED       an UNREACHABLE system event exists, or the active channel
//	             is FAILED. A FALLBACK to another channel changes the active
//	             channel and so leaves FAILED, unless that channel is FAILED
//	             too (whenever it failed: a channel fallen back to again
//	             stays FAILED until a step past SENT is reported) or
//	             UNREACHABLE was reported.
//	SUCCESS      a SUCCESS auth event exists. Terminal: nothing leaves it.
//
// Statuses count only with their kind: steps and FAILED on DELIVERY events,
// SUCCESS and FALLBACK on AUTH events, UNREACHABLE on SYSTEM events.
//
// The active channel is the channel a SUCCESS names as the one the user
// completed on (the latest SUCCESS naming exactly one in auth_channels), so
// that late reports move nothing once it is known. Else it is the target of
// the latest fallback (of fallbacks at one time, the end of their chain:
// A->B and B->C make C active, whatever their ids), else the channel of the
// latest delivery report, else the first channel of auth_channels. But
// where the latest fallback's target failed (nothing past SENT came of it)
// and, after that failure and the fallback, a channel no fallback moved
// away from was first reported, the fallback to it was missed (OTPLESS
// starts on another channel only after one), and it is active: of several,
// the one first reported latest. A late report of a channel in use before
// the fallback, or of one running alongside (an email of the same request),
// moves nothing.
// Where events disagree on a single-valued field, the latest event carrying
// a value wins; the token prefers SUCCESS events.
//
// Adding events never lowers a channel along DeliveryStatuses and never
// moves a request out of SUCCESS. A snapshot lists at most MaxListed
// channels, fallbacks and failures, the latest, and the active channel's
// entry (when it has a report) and latest failure: of a request with more
// channels, an older one can drop out of the list.
//
// It imports only the generated API types and protobuf.
package state
