package runner

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"os"
	"path/filepath"
	"strings"

	"github.com/kiln-build/kiln/internal/runner/protocol"
)

// TokenFile is the name, in the work directory, of the token a runner
// registered itself with. It is written with mode 0600 before the
// registration is sent, so that a crash in between never leaves a
// registered worker whose secret nobody has.
const TokenFile = "runner-token"

// resolveToken picks the runner's token: --token; else the one saved by an
// earlier registration; else (or with --register) a new registration.
func (r *Runner) resolveToken(ctx context.Context) (string, error) {
	if t := strings.TrimSpace(r.cfg.Token); t != "" && !r.cfg.Register {
		return t, nil
	}
	path := filepath.Join(r.cfg.WorkDir, TokenFile)
	if !r.cfg.Register {
		b, err := os.ReadFile(path)
		if err == nil && strings.TrimSpace(string(b)) != "" {
			r.log.Info("using the token saved by an earlier registration", "file", path)
			return strings.TrimSpace(string(b)), nil
		}
		if err != nil && !errors.Is(err, fs.ErrNotExist) {
			return "", fmt.Errorf("runner token: %w", err)
		}
	}
	secret := newSecret()
	if err := writeSecret(path, secret); err != nil {
		return "", err
	}
	if err := r.register(ctx, secret); err != nil {
		os.Remove(path)
		return "", err
	}
	fmt.Fprintf(r.cfg.Out, "Registered as worker %q; its token is saved in %s.\n"+
		"The worker is disabled until an admin enables it:\n  kiln worker enable %s\n", r.cfg.Name, path, r.cfg.Name)
	r.log.Info("registered; waiting for an admin to enable the worker", "worker", r.cfg.Name)
	return secret, nil
}

// newSecret makes a token secret in the server's format: "kiln_" and 256
// random bits in hex.
func newSecret() string {
	b := make([]byte, 32)
	rand.Read(b)
	return "kiln_" + hex.EncodeToString(b)
}

func writeSecret(path, secret string) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return fmt.Errorf("runner token: %w", err)
	}
	if _, err := io.WriteString(f, secret+"\n"); err != nil {
		f.Close()
		return fmt.Errorf("runner token: %w", err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return fmt.Errorf("runner token: %w", err)
	}
	return f.Close()
}

// register records this runner with the server as a disabled worker whose
// token has the hash of secret. Only the hash is sent.
func (r *Runner) register(ctx context.Context, secret string) error {
	h := sha256.Sum256([]byte(secret))
	body, _ := json.Marshal(protocol.Register{Name: r.cfg.Name, SecretHash: hex.EncodeToString(h[:])})
	url := strings.TrimSuffix(r.cfg.Server, "/") + protocol.RegisterPath
	req, err := http.NewRequestWithContext(withEndpoint(ctx, endpointRegister), http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		return errFatal{fmt.Errorf("--server: %w", err)}
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := r.http.Do(req)
	if err != nil {
		return fmt.Errorf("registering with %s: %w", r.cfg.Server, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode == http.StatusCreated {
		return nil
	}
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	detail := problemText(resp.StatusCode, b)
	var p struct {
		Field string `json:"field"`
	}
	if resp.StatusCode == http.StatusConflict && json.Unmarshal(b, &p) == nil && p.Field == "name" {
		return fmt.Errorf("registering as %q: %s; choose another --name, or start the runner with that worker's --token", r.cfg.Name, detail)
	}
	// too many registrations waiting, too many at once, or registration
	// turned off: the server's detail says which and what to do
	return fmt.Errorf("registering as %q: %s", r.cfg.Name, detail)
}

// problemDetail reads the detail of a problem+json answer, or says what
// the status was.
func problemDetail(resp *http.Response) string {
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	return problemText(resp.StatusCode, b)
}

// problemText is problemDetail of a body already read.
func problemText(status int, b []byte) string {
	var p struct {
		Detail string `json:"detail"`
	}
	if json.Unmarshal(b, &p) == nil && p.Detail != "" {
		return p.Detail
	}
	if s := strings.TrimSpace(string(b)); s != "" && len(s) < 300 {
		return fmt.Sprintf("HTTP %d: %s", status, s)
	}
	return fmt.Sprintf("HTTP %d", status)
}
