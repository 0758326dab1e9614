package pgtest

import (
	"bytes"
	"io"
	"net"
	"sync"
	"testing"
)

// Proxy forwards TCP connections to a target address. Cut drops every
// connection and refuses new ones, as a database restart would; Freeze
// holds everything sent, unanswered, as a network partition would;
// Restore lets connections through again (with what was held), and
// RestoreNew new ones only, as after a failover behind the same address.
type Proxy struct {
	target string
	ln     net.Listener
	wg     sync.WaitGroup

	mu       sync.Mutex
	cut      bool
	frozen   bool
	freezeOn []byte             // FreezeOn's pattern, until a client sends it
	conns    map[net.Conn]*link // both ends of every forwarded pair
	changed  chan struct{}      // closed, and replaced, when the state changes
}

// link is one forwarded pair of connections.
type link struct {
	silent bool // left silent for good by RestoreNew; guarded by Proxy.mu
}

// NewProxy listens on a free loopback port and forwards to target until tb
// ends.
func NewProxy(tb testing.TB, target string) *Proxy {
	tb.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	p := &Proxy{target: target, ln: ln, conns: map[net.Conn]*link{}, changed: make(chan struct{})}
	p.wg.Go(p.accept)
	tb.Cleanup(func() {
		ln.Close()
		p.Cut()
		p.wg.Wait()
	})
	return p
}

// Addr is the proxy's host:port.
func (p *Proxy) Addr() string { return p.ln.Addr().String() }

// Cut closes every forwarded connection and refuses new ones until Restore.
func (p *Proxy) Cut() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.cut = true
	for c := range p.conns {
		c.Close()
	}
	clear(p.conns)
	p.broadcast()
}

// Freeze keeps every connection open, and takes new ones, but forwards
// nothing in either direction until Restore or Cut: what is sent waits in
// the sockets' buffers, as TCP keeps resending it across a real partition,
// and arrives once it heals. Nor does a side that closes its connection
// meanwhile reach the other before then.
func (p *Proxy) Freeze() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.frozen = true
	p.broadcast()
}

// FreezeOn freezes the proxy, as Freeze does, once a client sends bytes
// holding pattern (in one read), before they are forwarded: a partition
// at a chosen point of a conversation, such as between two statements.
func (p *Proxy) FreezeOn(pattern string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.freezeOn = []byte(pattern)
}

// Restore forwards again: new connections after a Cut; after a Freeze,
// everything, what was held first.
func (p *Proxy) Restore() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.cut, p.frozen = false, false
	for _, l := range p.conns {
		l.silent = false
	}
	p.broadcast()
}

// RestoreNew ends a Freeze for new connections only: those open now stay
// silent, in both directions, until Cut (or Restore), as after a failover
// to a new server behind the same address, or a firewall that lost track
// of them. Only a timeout or a ping finds them dead.
func (p *Proxy) RestoreNew() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.frozen {
		for _, l := range p.conns {
			l.silent = true
		}
	}
	p.frozen = false
	p.broadcast()
}

// broadcast wakes whoever waits for a change. p.mu is held.
func (p *Proxy) broadcast() {
	close(p.changed)
	p.changed = make(chan struct{})
}

func (p *Proxy) accept() {
	for {
		client, err := p.ln.Accept()
		if err != nil {
			return // closed
		}
		p.wg.Go(func() { p.forward(client) })
	}
}

func (p *Proxy) forward(client net.Conn) {
	defer client.Close()
	if p.isCut() {
		return
	}
	server, err := net.Dial("tcp", p.target)
	if err != nil {
		return
	}
	defer server.Close()
	l := &link{}
	if !p.track(l, client, server) {
		return
	}
	var wg sync.WaitGroup
	pipe := func(dst, src net.Conn) {
		io.Copy(dst, p.held(l, src, src == client))
		// One direction ended: end the other too, once it may be heard.
		p.awaitHeard(l)
		dst.Close()
		src.Close()
	}
	wg.Go(func() { pipe(server, client) })
	wg.Go(func() { pipe(client, server) })
	wg.Wait()
	p.mu.Lock()
	delete(p.conns, client)
	delete(p.conns, server)
	p.mu.Unlock()
}

// silent reports whether what l carries is held now. p.mu is held.
func (p *Proxy) silent(l *link) bool { return p.frozen || l.silent }

// held reads src while l is not silent: what comes meanwhile waits, and
// so does what a read brought as l fell silent. What a client sends may
// freeze the proxy (FreezeOn).
func (p *Proxy) held(l *link, src net.Conn, fromClient bool) io.Reader {
	return readerFunc(func(b []byte) (int, error) {
		p.awaitHeard(l)
		n, err := src.Read(b)
		if fromClient {
			p.mu.Lock()
			if p.freezeOn != nil && bytes.Contains(b[:n], p.freezeOn) {
				p.freezeOn, p.frozen = nil, true
				p.broadcast()
			}
			p.mu.Unlock()
		}
		p.awaitHeard(l)
		return n, err
	})
}

// awaitHeard waits until l is no longer silent, or the proxy is cut.
func (p *Proxy) awaitHeard(l *link) {
	for {
		p.mu.Lock()
		if p.cut || !p.silent(l) {
			p.mu.Unlock()
			return
		}
		changed := p.changed
		p.mu.Unlock()
		<-changed
	}
}

type readerFunc func([]byte) (int, error)

func (f readerFunc) Read(b []byte) (int, error) { return f(b) }

func (p *Proxy) isCut() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.cut
}

// track registers the pair unless the proxy was cut meanwhile.
func (p *Proxy) track(l *link, conns ...net.Conn) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cut {
		return false
	}
	for _, c := range conns {
		p.conns[c] = l
	}
	return true
}
