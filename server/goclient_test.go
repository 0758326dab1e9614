package server_test

import (
	"bytes"
	"context"
	"go/ast"
	"go/format"
	"go/parser"
	"go/token"
	"io"
	"os"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/proto"

	eventsv1 "github.com/otpless-events/otpless-events/gen/otpless/events/v1"
	"github.com/otpless-events/otpless-events/internal/testserver"
	"github.com/otpless-events/otpless-events/server"
	"github.com/otpless-events/otpless-events/server/auth"
)

// The README's Go client: its ```go block holds these two functions as
// written here (TestREADMEGoClient compares them).

func dial(target, apiKey string) (*grpc.ClientConn, error) {
	return grpc.NewClient(target,
		grpc.WithTransportCredentials(insecure.NewCredentials()), // TLS: credentials.NewTLS(…), and Insecure: false
		grpc.WithPerRPCCredentials(auth.BearerCredentials{Token: apiKey, Insecure: true}))
}

// waitForSuccess follows request id until it succeeds and returns its final
// snapshot. FAILED is not the end: a fallback may still succeed, so bound
// the wait with ctx.
func waitForSuccess(ctx context.Context, conn grpc.ClientConnInterface, id string) (*eventsv1.AuthRequest, error) {
	client := eventsv1.NewRequestServiceClient(conn)
	var revision int64
	for {
		stream, err := client.WatchRequest(ctx, &eventsv1.WatchRequestRequest{RequestId: id, AfterRevision: revision})
		if err != nil {
			return nil, err
		}
		for {
			msg, err := stream.Recv()
			if err == io.EOF {
				break // after RECONNECT: resume after the revision seen
			}
			if err != nil {
				return nil, err // UNAVAILABLE during a deploy: retry after a pause
			}
			revision = msg.GetRevision()
			if r := msg.GetRequest(); r.GetStatus() == eventsv1.RequestStatus_REQUEST_STATUS_SUCCESS {
				return r, nil
			}
		}
	}
}

// streamCounter tells each watch stream a client opens.
type streamCounter struct {
	grpc.ClientConnInterface
	opened chan struct{}
}

func (c streamCounter) NewStream(ctx context.Context, desc *grpc.StreamDesc, method string, opts ...grpc.CallOption) (grpc.ClientStream, error) {
	c.opened <- struct{}{}
	return c.ClientConnInterface.NewStream(ctx, desc, method, opts...)
}

// TestREADMEGoClient runs the README's Go client against a server that ends
// watch streams early: it must resume after each RECONNECT, miss nothing,
// and return the SUCCESS snapshot.
func TestREADMEGoClient(t *testing.T) {
	t.Parallel()
	checkREADMEGoBlock(t)

	srv := testserver.Start(t, func(c *server.Config) {
		testserver.Secure(c)
		c.MaxWatchDuration = 200 * time.Millisecond
	})
	conn, err := dial(srv.GRPCAddr, testserver.AdminKey)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	bodies, err := os.ReadFile("../testdata/scenarios/whatsapp-fails-then-sms.jsonl")
	if err != nil {
		t.Fatal(err)
	}
	lines := bytes.Split(bytes.TrimSpace(bodies), []byte("\n"))
	const id = "c2a1d4e3f6b5a8c7d0e9f1a2b3c4d5e6"

	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	counter := streamCounter{conn, make(chan struct{}, 1000)}
	type result struct {
		r   *eventsv1.AuthRequest
		err error
	}
	done := make(chan result, 1)
	go func() {
		r, err := waitForSuccess(ctx, counter, id)
		done <- result{r, err}
	}()
	// Half the scenario on the first stream, the rest after a resume.
	<-counter.opened
	for _, b := range lines[:len(lines)/2] {
		srv.Ingest(t, b)
	}
	<-counter.opened
	for _, b := range lines[len(lines)/2:] {
		srv.Ingest(t, b)
	}
	res := <-done
	if res.err != nil {
		t.Fatalf("waitForSuccess: %v", res.err)
	}
	want, err := eventsv1.NewRequestServiceClient(conn).GetRequest(ctx, &eventsv1.GetRequestRequest{RequestId: id})
	if err != nil {
		t.Fatal(err)
	}
	if !proto.Equal(res.r, want.GetRequest()) {
		t.Errorf("waitForSuccess returned\n%v\nwant the stored snapshot\n%v", res.r, want.GetRequest())
	}
}

// checkREADMEGoBlock fails unless the README's ```go block defines dial and
// waitForSuccess exactly as this file does (comments and layout aside).
func checkREADMEGoBlock(t *testing.T) {
	t.Helper()
	readme, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	_, block, ok := strings.Cut(string(readme), "```go\n")
	block, _, ok2 := strings.Cut(block, "\n```")
	if !ok || !ok2 {
		t.Fatal("README.md has no ```go block")
	}
	self, err := os.ReadFile("goclient_test.go")
	if err != nil {
		t.Fatal(err)
	}
	want := funcs(t, "goclient_test.go", string(self))
	got := funcs(t, "README.md", "package client\n"+block)
	for _, name := range []string{"dial", "waitForSuccess"} {
		if got[name] == "" {
			t.Errorf("README.md's Go block does not define %s", name)
		} else if got[name] != want[name] {
			t.Errorf("README.md's %s differs from goclient_test.go's:\n%s\nwant\n%s", name, got[name], want[name])
		}
	}
}

// funcs formats each function of src without its comments.
func funcs(t *testing.T, name, src string) map[string]string {
	t.Helper()
	fset := token.NewFileSet()
	f, err := parser.ParseFile(fset, name, src, 0) // no comments
	if err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	out := map[string]string{}
	for _, d := range f.Decls {
		if fn, ok := d.(*ast.FuncDecl); ok && fn.Recv == nil {
			var b bytes.Buffer
			if err := format.Node(&b, fset, fn); err != nil {
				t.Fatal(err)
			}
			out[fn.Name.Name] = b.String()
		}
	}
	return out
}
