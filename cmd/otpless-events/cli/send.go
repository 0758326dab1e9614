package cli

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"google.golang.org/protobuf/encoding/protojson"

	eventsv1 "github.com/otpless-events/otpless-events/gen/otpless/events/v1"
	"github.com/otpless-events/otpless-events/server"
	"github.com/otpless-events/otpless-events/server/gateway"
)

// envWebhookURL is the webhook URL serve prints on its first start, key
// included.
const envWebhookURL = "OTPLESS_WEBHOOK_URL"

func newSend(stdout io.Writer) *cobra.Command {
	var client clientFlags
	httpAddr := server.DefaultConfig().HTTPAddr
	cmd := &cobra.Command{
		Use:   "send FILE...",
		Short: "POST webhook bodies to a server as OTPLESS does",
		Long: "Posts each body, in order, and prints what the server stored: a .json file is one body,\n" +
			"a .jsonl file one body per line (the scenario format). Stops at the first body the server\n" +
			"does not answer with 200.\n\n" +
			"The target is --http-addr when given on the command line, else $" + envWebhookURL + " (the URL\n" +
			"serve prints on its first start, webhook key included; user:password@ in it is sent as\n" +
			"HTTP Basic), else http://" + httpAddr + gateway.WebhookPath + ".",
		Args: cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, files []string) error {
			explicit := cmd.Flags().Changed("http-addr")
			if err := bindEnv(cmd.Flags()); err != nil {
				return err
			}
			url := webhookURL(httpAddr, client.tls || client.tlsCAFile != "")
			if u := os.Getenv(envWebhookURL); u != "" && !explicit {
				url = u
			}
			if (client.tls || client.tlsCAFile != "") && strings.HasPrefix(url, "http://") {
				return fmt.Errorf("TLS asked for, but the webhook URL %s is http://: give an https:// one", redactURL(url))
			}
			tlsCfg, err := client.tlsConfig()
			if err != nil {
				return err
			}
			hc := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{TLSClientConfig: tlsCfg, Proxy: http.ProxyFromEnvironment}}
			for _, f := range files {
				if err := sendFile(cmd, hc, url, f, stdout); err != nil {
					return err
				}
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&httpAddr, "http-addr", httpAddr, "HTTP address of the server (host:port, or a base URL)")
	client.register(f, false)
	documentEnv(f)
	return cmd
}

// webhookURL is the webhook route at addr, a host:port or a base URL.
func webhookURL(addr string, useTLS bool) string {
	if strings.Contains(addr, "://") {
		return strings.TrimSuffix(addr, "/") + gateway.WebhookPath
	}
	scheme := "http://"
	if useTLS {
		scheme = "https://"
	}
	return scheme + dialAddr(addr) + gateway.WebhookPath
}

// body is one webhook body and where it came from.
type body struct {
	where string // file:line
	data  []byte
}

func readBodies(path string) ([]body, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	b = bytes.TrimPrefix(b, []byte("\uFEFF")) // a byte order mark some editors write: not part of the JSON
	name := filepath.Base(path)
	switch filepath.Ext(path) {
	case ".json":
		return []body{{where: name, data: bytes.TrimSpace(b)}}, nil
	case ".jsonl":
		var out []body
		n := 0
		for line := range bytes.Lines(b) {
			n++
			if line = bytes.TrimSpace(line); len(line) > 0 {
				out = append(out, body{where: fmt.Sprintf("%s:%d", name, n), data: line})
			}
		}
		return out, nil
	}
	return nil, fmt.Errorf("%s: want a .json file (one body) or a .jsonl file (one body per line)", path)
}

func sendFile(cmd *cobra.Command, hc *http.Client, url, path string, stdout io.Writer) error {
	bodies, err := readBodies(path)
	if err != nil {
		return err
	}
	for _, b := range bodies {
		req, err := http.NewRequestWithContext(cmd.Context(), http.MethodPost, url, bytes.NewReader(b.data))
		if err != nil { // a *url.Error: its text would show the webhook key
			return fmt.Errorf("webhook URL %s: %w", redactURL(url), errors.Unwrap(err))
		}
		req.Header.Set("Content-Type", "application/json")
		resp, err := hc.Do(req)
		if err != nil { // a *url.Error: its text would show the webhook key
			return fmt.Errorf("%s: POST %s: %w", b.where, redactURL(url), errors.Unwrap(err))
		}
		answer, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil {
			return fmt.Errorf("%s: reading the answer: %w", b.where, err)
		}
		if resp.StatusCode != http.StatusOK {
			var st struct{ Message string }
			if json.Unmarshal(answer, &st) != nil || st.Message == "" {
				st.Message = strings.TrimSpace(string(answer))
			}
			return fmt.Errorf("%s: HTTP %d: %s", b.where, resp.StatusCode, st.Message)
		}
		out := &eventsv1.IngestResponse{}
		if err := protojson.Unmarshal(answer, out); err != nil {
			return fmt.Errorf("%s: answer %q: %w", b.where, answer, err)
		}
		for _, e := range out.GetEvents() {
			line := fmt.Sprintf("%s  %s  rev %d  %s", b.where, orNone(e.GetRequestId()), e.GetRevision(), e.GetStatus())
			if e.GetDuplicate() {
				line += "  (duplicate)"
			}
			if _, err := fmt.Fprintln(stdout, line); err != nil {
				return err
			}
		}
	}
	return nil
}

func orNone(requestID string) string {
	if requestID == "" {
		return "(no request)"
	}
	return requestID
}
