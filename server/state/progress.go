package state

import (
	"cmp"
	"strings"

	"google.golang.org/protobuf/proto"

	eventsv1 "github.com/otpless-events/otpless-events/gen/otpless/events/v1"
)

// step indexes a channel's delivery steps, in progress order.
type step int

const (
	stepSent step = iota
	stepDelivered
	stepRead
	stepClicked
	numSteps
)

// stepStatus is the DeliveryStatus of a channel whose furthest step is s.
var stepStatus = [numSteps]eventsv1.DeliveryStatus{
	stepSent:      eventsv1.DeliveryStatus_DELIVERY_STATUS_SENT,
	stepDelivered: eventsv1.DeliveryStatus_DELIVERY_STATUS_DELIVERED,
	stepRead:      eventsv1.DeliveryStatus_DELIVERY_STATUS_READ,
	stepClicked:   eventsv1.DeliveryStatus_DELIVERY_STATUS_CLICKED,
}

// stepOf returns the step a delivery report's status names, if any.
func stepOf(status string) (step, bool) {
	switch status {
	case statusSent:
		return stepSent, true
	case statusDelivered:
		return stepDelivered, true
	case statusRead:
		return stepRead, true
	case statusClicked:
		return stepClicked, true
	}
	return 0, false
}

// progress accumulates the delivery reports of one channel.
type progress struct {
	channel  string
	first    *eventsv1.Event           // the channel's earliest report
	reports  [numSteps]*eventsv1.Event // the earliest report of each step
	failed   *eventsv1.Event           // the earliest FAILED report
	identity string                    // from the latest report carrying one
}

// snapshot returns the channel's progress: observed steps at their earliest
// report, earlier steps implied by later ones, and the furthest step reached
// as status, unless a failure stands (nothing past SENT observed).
func (p *progress) snapshot() *eventsv1.ChannelProgress {
	c := &eventsv1.ChannelProgress{Channel: p.channel, Identity: p.identity}
	var steps [numSteps]*eventsv1.Step
	var later *eventsv1.Event // the earliest report of a step after s
	for s := stepClicked; s >= stepSent; s-- {
		switch e := p.reports[s]; {
		case e != nil:
			steps[s] = &eventsv1.Step{Time: copyTime(e.GetEventTime())}
			if c.Status == eventsv1.DeliveryStatus_DELIVERY_STATUS_UNSPECIFIED {
				c.Status = stepStatus[s]
			}
			if later == nil || compareTime(e.GetEventTime(), later.GetEventTime()) < 0 {
				later = e
			}
		case later != nil:
			steps[s] = &eventsv1.Step{Time: copyTime(later.GetEventTime()), Implied: true}
		}
	}
	c.Sent, c.Delivered, c.Read, c.Clicked = steps[stepSent], steps[stepDelivered], steps[stepRead], steps[stepClicked]
	if p.failed != nil {
		c.Failed = &eventsv1.Step{Time: copyTime(p.failed.GetEventTime())}
		c.Error = proto.CloneOf(p.failed.GetError())
		if !p.pastSent() {
			c.Status = eventsv1.DeliveryStatus_DELIVERY_STATUS_FAILED
		}
	}
	return c
}

// pastSent reports whether a step after SENT was observed.
func (p *progress) pastSent() bool {
	for _, e := range p.reports[stepSent+1:] {
		if e != nil {
			return true
		}
	}
	return false
}

// compareProgress orders channels by earliest report time, then name.
func compareProgress(a, b *progress) int {
	return cmp.Or(
		compareTime(a.first.GetEventTime(), b.first.GetEventTime()),
		strings.Compare(a.channel, b.channel),
	)
}
