package pool

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/kiln-build/kiln/internal/model"
	"github.com/kiln-build/kiln/internal/store"
	"github.com/kiln-build/kiln/internal/telemetry"
)

// ProcessSettings are the settings of a process pool.
type ProcessSettings struct {
	// MetricsServer, when set, gives each instance's runner a metrics and
	// pprof listener: the instance of slot i listens on this address's
	// port + i − 1 ("[host]:port", a fixed port).
	MetricsServer string `json:"metrics_server,omitempty"`
}

// ExecSettings are the settings of an exec pool.
type ExecSettings struct {
	// Command is the absolute path of the executable kiln runs as
	// `COMMAND create|destroy|list`.
	Command string `json:"command"`
	// Timeout bounds one call; default DefaultExecTimeout.
	Timeout model.Duration `json:"timeout,omitempty"`
	// ServerURL is where the instances' runners connect, when not the
	// server's own --listen URL (a cloud machine cannot reach 127.0.0.1).
	ServerURL string `json:"server_url,omitempty"`
	// Config is passed to the executable as is (pool.config): the
	// machine type, image, region… of the user's cloud.
	Config json.RawMessage `json:"config,omitempty"`
}

// DefaultExecTimeout bounds a call of an exec pool's executable when its
// settings give no timeout.
const DefaultExecTimeout = time.Minute

// maxExecTimeout is the longest timeout an exec pool may set: a call the
// autoscaler waits for longer is a hung one.
const maxExecTimeout = time.Hour

// CheckSettings checks the provider settings of pool p, as a pool's
// settings are checked before they are stored: the error is a
// *store.FieldError naming the setting ("settings.command").
func CheckSettings(p *model.WorkerPool) error {
	switch p.Provider {
	case model.ProviderProcess:
		_, err := processSettings(p)
		return err
	case model.ProviderExec:
		_, err := execSettings(p)
		return err
	}
	return nil // the store names an unknown provider
}

// decodeSettings reads a pool's settings strictly: a JSON object whose
// keys are among fields (name → pointer to its value), each decoded into
// its place, so that every error names its setting.
func decodeSettings(raw json.RawMessage, fields map[string]any) error {
	if len(bytes.TrimSpace(raw)) == 0 {
		return nil
	}
	var m map[string]json.RawMessage
	if err := json.Unmarshal(raw, &m); err != nil || m == nil {
		return settingError("", "must be a JSON object")
	}
	names := slices.Sorted(maps.Keys(fields))
	for _, k := range slices.Sorted(maps.Keys(m)) {
		dst, ok := fields[k]
		if !ok {
			return settingError(k, "unknown setting; this provider accepts %s", strings.Join(names, ", "))
		}
		if string(m[k]) == "null" {
			return settingError(k, "must not be null; leave it out for the default")
		}
		if err := json.Unmarshal(m[k], dst); err != nil {
			var typ *json.UnmarshalTypeError
			if errors.As(err, &typ) {
				return settingError(k, "must be %s, not %s", kindOf(typ.Type.Kind()), typ.Value)
			}
			return settingError(k, "%v", err)
		}
	}
	return nil
}

func kindOf(k reflect.Kind) string {
	switch k {
	case reflect.String:
		return "a string"
	case reflect.Int, reflect.Int64, reflect.Float64:
		return "a number"
	case reflect.Slice:
		return "an array"
	}
	return "an object"
}

// settingError is a FieldError naming settings.<name>.
func settingError(name, format string, args ...any) error {
	field := "settings"
	if name != "" {
		field += "." + name
	}
	return &store.FieldError{Field: field, Message: fmt.Sprintf(format, args...), Kind: store.Invalid}
}

func processSettings(p *model.WorkerPool) (*ProcessSettings, error) {
	var s ProcessSettings
	if err := decodeSettings(p.Settings, map[string]any{"metrics_server": &s.MetricsServer}); err != nil {
		return nil, err
	}
	if s.MetricsServer != "" {
		addr, err := telemetry.ParseListenAddress(s.MetricsServer)
		if err == nil {
			_, err = MetricsAddresses(addr, max(p.MaxInstances, 1))
		}
		if err != nil {
			return nil, settingError("metrics_server", "%v", err)
		}
		s.MetricsServer = addr
	}
	return &s, nil
}

func execSettings(p *model.WorkerPool) (*ExecSettings, error) {
	var s ExecSettings
	if err := decodeSettings(p.Settings, map[string]any{"command": &s.Command, "timeout": &s.Timeout,
		"server_url": &s.ServerURL, "config": &s.Config}); err != nil {
		return nil, err
	}
	switch {
	case s.Command == "":
		return nil, settingError("command", "is required: the absolute path of the executable kiln runs as COMMAND create|destroy|list")
	case !filepath.IsAbs(s.Command):
		return nil, settingError("command", "%q is not an absolute path", s.Command)
	}
	info, err := os.Stat(s.Command)
	switch {
	case err != nil:
		return nil, settingError("command", "%v", err)
	case info.IsDir() || info.Mode()&0o111 == 0:
		return nil, settingError("command", "%s is not an executable file", s.Command)
	}
	switch t := time.Duration(s.Timeout); {
	case t == 0:
		s.Timeout = model.Duration(DefaultExecTimeout)
	case t < 0 || t > maxExecTimeout:
		return nil, settingError("timeout", "must be positive and at most %s, e.g. \"2m\"", maxExecTimeout)
	}
	if s.ServerURL != "" {
		u, err := url.Parse(s.ServerURL)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return nil, settingError("server_url", "%q is not an http:// or https:// URL", s.ServerURL)
		}
	}
	if len(s.Config) > 0 {
		var m map[string]any
		if json.Unmarshal(s.Config, &m) != nil || m == nil {
			return nil, settingError("config", "must be a JSON object")
		}
	}
	return &s, nil
}

// MetricsAddresses gives n runners listeners on consecutive ports from
// base ("[host]:port", as telemetry.ParseListenAddress returns it): the
// first runner gets port, the second port+1, and so on. Port 0 is refused:
// a scrape configuration needs to know the ports.
func MetricsAddresses(base string, n int) ([]string, error) {
	host, portStr, err := net.SplitHostPort(base)
	if err != nil {
		return nil, err
	}
	port, err := strconv.Atoi(portStr)
	if err != nil {
		return nil, fmt.Errorf("port %q is not a number", portStr)
	}
	if port == 0 {
		return nil, errors.New("port 0 is not allowed: the runner of slot i listens on port+i-1, which a scrape configuration must know")
	}
	if port+n-1 > 65535 {
		return nil, fmt.Errorf("%d runners from port %d go past port 65535", n, port)
	}
	out := make([]string, n)
	for i := range out {
		out[i] = net.JoinHostPort(host, strconv.Itoa(port+i))
	}
	return out, nil
}
