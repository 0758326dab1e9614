package auth

import (
	"context"
	"fmt"
	"net/http"
	"strings"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/grpc/tap"

	eventsv1 "github.com/otpless-events/otpless-events/gen/otpless/events/v1"
)

// MethodScopes is the scope each gRPC method requires. Methods under
// publicPrefixes need no credential; any other method needs admin.
var MethodScopes = map[string]Scope{
	eventsv1.RequestService_GetRequest_FullMethodName:        ScopeRead,
	eventsv1.RequestService_ListRequestEvents_FullMethodName: ScopeRead,
	eventsv1.RequestService_WatchRequest_FullMethodName:      ScopeWatch,
	eventsv1.RequestService_CreateWatchToken_FullMethodName:  ScopeMintWatchToken,
	eventsv1.WebhookService_Ingest_FullMethodName:            ScopeIngest,
}

// watchTokenMethods are the only methods a watch token may call.
var watchTokenMethods = map[string]bool{
	eventsv1.RequestService_WatchRequest_FullMethodName: true,
	eventsv1.RequestService_GetRequest_FullMethodName:   true,
}

// publicPrefixes: health checks (for load balancers) and reflection (schema
// only, no data).
var publicPrefixes = []string{"/grpc.health.v1.Health/", "/grpc.reflection."}

// UnaryInterceptor authenticates unary calls and checks their scope and, for
// watch tokens, their request id.
func (k *Keyring) UnaryInterceptor() grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		ctx, p, err := k.authorize(ctx, info.FullMethod)
		if err != nil {
			return nil, err
		}
		if err := checkRequestID(p, req); err != nil {
			return nil, err
		}
		return handler(ctx, req)
	}
}

// StreamInterceptor is UnaryInterceptor for server streams: the request id is
// checked when the request message arrives.
func (k *Keyring) StreamInterceptor() grpc.StreamServerInterceptor {
	return func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
		ctx, p, err := k.authorize(ss.Context(), info.FullMethod)
		if err != nil {
			return err
		}
		return handler(srv, &authorizedStream{ServerStream: ss, ctx: ctx, p: p})
	}
}

// TapHandle refuses a call to a method that needs a credential when it
// names none that is valid, or one without the method's scope, before
// grpc-go reads any of its messages: the interceptors see a unary call
// only once its whole request message has arrived, so a client could open
// any number of streams it may not make and hold them by sending nothing
// (a watch token, which browsers hold, calling Ingest). The scope is
// checked here for the methods of MethodScopes only: any other is one the
// server does not have, which grpc-go answers UNIMPLEMENTED at once (the
// interceptors check it all the same, should one be served).
func (k *Keyring) TapHandle(ctx context.Context, info *tap.Info) (context.Context, error) {
	if Public(info.FullMethodName) {
		return ctx, nil
	}
	p, err := k.Authenticate(bearerFromMetadata(metadata.NewIncomingContext(ctx, info.Header)))
	if err != nil {
		return ctx, status.Error(codes.Unauthenticated, err.Error())
	}
	if _, known := MethodScopes[info.FullMethodName]; known {
		if err := allowed(p, info.FullMethodName); err != nil {
			return ctx, err
		}
	}
	return context.WithValue(ctx, tappedKey{}, p), nil // the interceptor's, so that it does not authenticate again
}

// tappedKey holds the *Principal TapHandle authenticated, before its scopes
// are checked.
type tappedKey struct{}

// Public reports whether method needs no credential.
func Public(method string) bool {
	for _, prefix := range publicPrefixes {
		if strings.HasPrefix(method, prefix) {
			return true
		}
	}
	return false
}

func (k *Keyring) authorize(ctx context.Context, method string) (context.Context, *Principal, error) {
	if Public(method) {
		return ctx, nil, nil
	}
	p, tapped := ctx.Value(tappedKey{}).(*Principal)
	if !tapped {
		var err error
		if p, err = k.Authenticate(bearerFromMetadata(ctx)); err != nil {
			return nil, nil, status.Error(codes.Unauthenticated, err.Error())
		}
	}
	if err := allowed(p, method); err != nil {
		return nil, nil, err
	}
	return WithPrincipal(ctx, p), p, nil
}

// allowed reports, as PERMISSION_DENIED, a credential that may not call
// method.
func allowed(p *Principal, method string) error {
	if p.RequestID != "" && !watchTokenMethods[method] {
		return status.Error(codes.PermissionDenied, "a watch token may only watch or get its request")
	}
	need, ok := MethodScopes[method]
	if !ok {
		need = ScopeAdmin
	}
	if !p.Has(need) {
		return status.Error(codes.PermissionDenied, fmt.Sprintf("credential %q lacks scope %q", p.Name, need))
	}
	return nil
}

// checkRequestID keeps a watch token to its own request.
func checkRequestID(p *Principal, req any) error {
	if p == nil || p.RequestID == "" {
		return nil
	}
	r, ok := req.(interface{ GetRequestId() string })
	if !ok || r.GetRequestId() != p.RequestID {
		return status.Error(codes.PermissionDenied, "watch token is for another request")
	}
	return nil
}

type authorizedStream struct {
	grpc.ServerStream
	ctx context.Context
	p   *Principal
}

func (s *authorizedStream) Context() context.Context { return s.ctx }

func (s *authorizedStream) RecvMsg(m any) error {
	if err := s.ServerStream.RecvMsg(m); err != nil {
		return err
	}
	return checkRequestID(s.p, m)
}

func bearerFromMetadata(ctx context.Context) string {
	md, _ := metadata.FromIncomingContext(ctx)
	return firstBearer(md.Get("authorization"))
}

// AuthenticateHeader is Authenticate for the bearer credential of an HTTP
// request's Authorization header, as the gateway forwards it to gRPC.
func (k *Keyring) AuthenticateHeader(h http.Header) (*Principal, error) {
	if tok := firstBearer(h.Values("Authorization")); tok != "" {
		return k.Authenticate(tok)
	}
	return nil, ErrUnauthenticated
}

// firstBearer is the token of the first Bearer credential among values
// of Authorization, or "".
func firstBearer(values []string) string {
	for _, v := range values {
		if tok, ok := cutCredentials(v, "Bearer"); ok {
			return tok
		}
	}
	return ""
}

// cutCredentials is the credentials of Authorization value v when its
// scheme is scheme, in any case: RFC 9110 (11.4) puts one or more spaces
// between them.
func cutCredentials(v, scheme string) (string, bool) {
	s, c, ok := strings.Cut(strings.TrimSpace(v), " ")
	if !ok || !strings.EqualFold(s, scheme) {
		return "", false
	}
	return strings.TrimSpace(c), true
}

// BearerCredentials are per-RPC credentials for clients (the CLI, tests).
type BearerCredentials struct {
	Token string
	// Insecure allows sending over connections without TLS (loopback,
	// in-process).
	Insecure bool
}

// GetRequestMetadata implements credentials.PerRPCCredentials.
func (b BearerCredentials) GetRequestMetadata(context.Context, ...string) (map[string]string, error) {
	return map[string]string{"authorization": "Bearer " + b.Token}, nil
}

// RequireTransportSecurity implements credentials.PerRPCCredentials.
func (b BearerCredentials) RequireTransportSecurity() bool { return !b.Insecure }
