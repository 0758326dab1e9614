package server

import (
	"context"
	"fmt"
	"net"
	"runtime/pprof"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	eventsv1 "github.com/otpless-events/otpless-events/gen/otpless/events/v1"
)

// floodingWatch sends 32 KiB messages until a Send fails, and reports how
// its handler ended.
type floodingWatch struct {
	eventsv1.UnimplementedRequestServiceServer
	ended chan error
}

func (f floodingWatch) WatchRequest(_ *eventsv1.WatchRequestRequest, stream grpc.ServerStreamingServer[eventsv1.WatchRequestResponse]) error {
	msg := &eventsv1.WatchRequestResponse{Request: &eventsv1.AuthRequest{RequestId: strings.Repeat("x", 32<<10)}}
	for {
		if err := stream.Send(msg); err != nil {
			f.ended <- err
			return err
		}
	}
}

// A client that stops reading a server stream loses it once a message has
// waited d to be taken: the handler gets DEADLINE_EXCEEDED from Send (a
// watch returns, and gives its slot back), the Send that waited on the
// client's flow control ends, and so does the stream, with the client's
// connection: grpc-go would keep its last frames, and the buffers they
// hold, for as long as the client does not read.
func TestBoundedSendsEndAStalledStream(t *testing.T) {
	var peers peerConns
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer(grpc.ChainStreamInterceptor(boundedSends(200*time.Millisecond, peers.close)))
	watch := floodingWatch{ended: make(chan error, 1)}
	eventsv1.RegisterRequestServiceServer(srv, watch)
	go srv.Serve(peers.listen(lis))
	defer srv.Stop()

	// Fixed windows: grpc-go would otherwise grow them as the data comes.
	conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithInitialWindowSize(1<<16), grpc.WithInitialConnWindowSize(1<<16))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if _, err := eventsv1.NewRequestServiceClient(conn).WatchRequest(t.Context(), &eventsv1.WatchRequestRequest{RequestId: "r"}); err != nil {
		t.Fatal(err)
	} // and never read

	select {
	case err := <-watch.ended:
		if status.Code(err) != codes.DeadlineExceeded {
			t.Fatalf("the handler's Send failed with %v, want DEADLINE_EXCEEDED", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the handler still sends to a client that reads nothing")
	}
	deadline := time.Now().Add(5 * time.Second)
	for sendsWaiting() > 0 {
		if time.Now().After(deadline) {
			t.Fatal("the Send that waited on the client is still waiting after the handler returned")
		}
		time.Sleep(10 * time.Millisecond) // polling for a goroutine's end
	}
	stopped := make(chan struct{})
	go func() { srv.GracefulStop(); close(stopped) }()
	select {
	case <-stopped:
	case <-time.After(5 * time.Second):
		t.Fatal("the stream is still open: GracefulStop waits for it")
	}
}

// sendsWaiting counts the goroutines of boundedStream.SendMsg still sending.
func sendsWaiting() int {
	var b strings.Builder
	pprof.Lookup("goroutine").WriteTo(&b, 2) // each goroutine's stack
	return strings.Count(b.String(), "(*boundedStream).SendMsg.func1")
}

// panickingStream's Send panics.
type panickingStream struct{ grpc.ServerStream }

func (panickingStream) Context() context.Context { return context.Background() }
func (panickingStream) SendMsg(any) error        { panic("a bug in Send") }

// A panic in the Send goroutine comes back to the handler's goroutine, where
// the recovery interceptor is, rather than ending the process.
func TestBoundedSendsPanicOnTheHandlersGoroutine(t *testing.T) {
	s := &boundedStream{ServerStream: panickingStream{}, d: time.Minute, closeConn: func(net.Addr) {}}
	defer func() {
		if p := recover(); p == nil || !strings.Contains(fmt.Sprint(p), "a bug in Send") {
			t.Errorf("recovered %v, want the Send's panic", p)
		}
	}()
	s.SendMsg(nil)
}
