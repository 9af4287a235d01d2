package filestore

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"net/url"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"time"

	"github.com/kiln-build/kiln/internal/model"
)

// ConfigError says which key of a configuration is wrong and why. Field is
// the key's name inside the configuration object ("endpoint"); the API
// reports it as "configuration.endpoint".
type ConfigError struct {
	Field   string
	Message string
}

// Error is "field: message".
func (e *ConfigError) Error() string {
	if e.Field == "" {
		return e.Message
	}
	return e.Field + ": " + e.Message
}

func configErrorf(field, format string, args ...any) error {
	return &ConfigError{Field: field, Message: fmt.Sprintf(format, args...)}
}

// LocalConfig is the configuration of a Local file store, as stored in
// model.FileStore.Configuration.
type LocalConfig struct {
	// BaseDirectory is where content lives; it must be absolute.
	BaseDirectory string `json:"base_directory"`
}

// S3Config says how to reach one bucket of an S3-compatible object store:
// the configuration of an S3 file store, and what anything else kiln writes
// to S3 (reports) is configured with. It never holds credentials: those
// come from the server's environment or from the file CredentialsFile
// names (see Credentials in s3creds.go).
type S3Config struct {
	// Endpoint is the service's URL: https://s3.eu-west-1.amazonaws.com,
	// http://127.0.0.1:9000. The scheme decides TLS. Required.
	Endpoint string `json:"endpoint"`
	// Bucket is the bucket's name. Required.
	Bucket string `json:"bucket"`
	// Region signs requests; empty asks the endpoint (GetBucketLocation).
	Region string `json:"region,omitempty"`
	// Prefix is put before every key kiln writes ("kiln/" keeps kiln's
	// objects apart from others in a shared bucket). It never starts with
	// "/"; a "/" is added when it does not end with one.
	Prefix string `json:"prefix,omitempty"`
	// PathStyle forces path-style addressing (https://host/bucket/key),
	// which most self-hosted servers need, when true; virtual-host style
	// (https://bucket.host/key) when false. Unset, the client picks by
	// endpoint: virtual-host for AWS and Google, path-style elsewhere.
	PathStyle *bool `json:"path_style,omitempty"`
	// CAFile is a PEM file of certificates to trust, besides the system's,
	// for an endpoint with a self-signed or private certificate.
	CAFile string `json:"ca_file,omitempty"`
	// CredentialsFile names a file in the AWS shared credentials format
	// (an INI file: [profile] aws_access_key_id, aws_secret_access_key,
	// optional aws_session_token) to take the keys from, instead of the
	// environment. It is read again when it changes.
	CredentialsFile string `json:"credentials_file,omitempty"`
	// CredentialsProfile is the section of CredentialsFile to use;
	// "default" when empty.
	CredentialsProfile string `json:"credentials_profile,omitempty"`
	// PresignedDownloads sends downloaders to a presigned URL of the
	// object (an HTTP redirect) instead of streaming it through kiln.
	PresignedDownloads bool `json:"presigned_downloads,omitempty"`
	// PresignedExpiry is how long a presigned URL stays valid: 15m when
	// unset, at most 7 days (S3's limit).
	PresignedExpiry Duration `json:"presigned_expiry,omitempty"`
	// PartSize is the size of each part of a multipart upload, in bytes:
	// 16 MiB when unset, between 5 MiB and 5 GiB (S3's limits). Files up
	// to this size are sent in one request. It is raised for files so big
	// that they would need more than 10000 parts.
	PartSize int64 `json:"part_size,omitempty"`
	// MaxAttempts is how many times one request to S3 is tried, with
	// backoff, before the operation fails: 5 when unset, 1 to 20.
	MaxAttempts int64 `json:"max_attempts,omitempty"`
	// AbandonedUploadAge is when an unfinished multipart upload under the
	// prefix counts as abandoned (its server was killed in the middle)
	// and is aborted by the server's clean-up: 24h when unset.
	AbandonedUploadAge Duration `json:"abandoned_upload_age,omitempty"`
}

// Defaults of S3Config.
const (
	DefaultPresignedExpiry    = 15 * time.Minute
	MaxPresignedExpiry        = 7 * 24 * time.Hour
	DefaultPartSize           = 16 << 20
	MinPartSize               = 5 << 20
	MaxPartSize               = 5 << 30
	DefaultAbandonedUploadAge = 24 * time.Hour
	DefaultMaxAttempts        = 5
	maxParts                  = 10000
)

// Duration is a time.Duration written in JSON as a Go duration string
// ("15m", "24h").
type Duration time.Duration

// UnmarshalJSON reads a duration string.
func (d *Duration) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return errors.New(`must be a duration string such as "15m" or "24h"`)
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		return fmt.Errorf(`must be a duration such as "15m" or "24h", not %q`, s)
	}
	*d = Duration(v)
	return nil
}

// MarshalJSON writes a duration string.
func (d Duration) MarshalJSON() ([]byte, error) { return json.Marshal(time.Duration(d).String()) }

// secretWords are the parts of key names that hold secrets. A
// configuration that carries one is refused: kiln stores no credentials.
var secretWords = []string{"secret", "password", "passwd", "token", "access_key", "accesskey", "session", "private_key", "credential"}

// notSecret are the keys that match secretWords but name no secret.
var notSecret = map[string]bool{"credentials_file": true, "credentials_profile": true}

func looksSecret(key string) bool {
	k := strings.ToLower(key)
	if notSecret[k] {
		return false
	}
	for _, w := range secretWords {
		if strings.Contains(k, w) {
			return true
		}
	}
	return false
}

// CredentialsHelp says how S3 credentials reach kiln; error messages
// about credentials end with it.
const CredentialsHelp = "kiln never stores S3 credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY " +
	"(or KILN_S3_ACCESS_KEY_ID and KILN_S3_SECRET_ACCESS_KEY) in the environment of the server (and of kiln expire), " +
	"or name a file in the AWS credentials format with credentials_file"

// decodeStrict decodes a JSON object into dst (a pointer to a struct)
// key by key, so that every error names its key: unknown keys, keys that
// carry secrets, nulls and values of the wrong type are refused.
func decodeStrict(raw json.RawMessage, dst any) error {
	if len(bytes.TrimSpace(raw)) == 0 {
		raw = json.RawMessage("{}")
	}
	var m map[string]json.RawMessage
	if err := json.Unmarshal(raw, &m); err != nil || m == nil {
		return configErrorf("", "the configuration must be a JSON object")
	}
	v := reflect.ValueOf(dst).Elem()
	fields := map[string]int{}
	var names []string
	for i := range v.NumField() {
		name, _, _ := strings.Cut(v.Type().Field(i).Tag.Get("json"), ",")
		fields[name] = i
		names = append(names, name)
	}
	slices.Sort(names)
	for _, k := range slices.Sorted(maps.Keys(m)) {
		i, ok := fields[k]
		switch {
		case !ok && looksSecret(k):
			return configErrorf(k, "%q looks like a secret; %s", k, CredentialsHelp)
		case !ok:
			return configErrorf(k, "unknown key %q; the configuration accepts %s", k, strings.Join(names, ", "))
		case string(bytes.TrimSpace(m[k])) == "null":
			return configErrorf(k, "%q must not be null: leave it out for the default", k)
		}
		if err := json.Unmarshal(m[k], v.Field(i).Addr().Interface()); err != nil {
			var typ *json.UnmarshalTypeError
			if errors.As(err, &typ) {
				return configErrorf(k, "%q must be %s, not %s", k, kindOf(typ.Type), typ.Value)
			}
			return configErrorf(k, "%q %v", k, err)
		}
	}
	return nil
}

func kindOf(t reflect.Type) string {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	switch t.Kind() {
	case reflect.Bool:
		return "a boolean"
	case reflect.String:
		return "a string"
	case reflect.Int64:
		return "an integer"
	}
	return "an object"
}

// ParseLocalConfig decodes and checks a Local store's configuration.
func ParseLocalConfig(raw json.RawMessage) (*LocalConfig, error) {
	var c LocalConfig
	if err := decodeStrict(raw, &c); err != nil {
		return nil, err
	}
	if c.BaseDirectory == "" {
		return nil, configErrorf("base_directory", "a Local file store needs a base_directory, the absolute path of the directory that holds its files")
	}
	if !filepath.IsAbs(c.BaseDirectory) {
		return nil, configErrorf("base_directory", "%q must be an absolute path", c.BaseDirectory)
	}
	return &c, nil
}

// ParseS3Config decodes and checks an S3 configuration strictly: every key
// known, of the right type, within its limits, and no secret anywhere.
// Defaults are not filled in (see the fields); what is returned shows the
// configuration as given.
func ParseS3Config(raw json.RawMessage) (*S3Config, error) {
	var c S3Config
	if err := decodeStrict(raw, &c); err != nil {
		return nil, err
	}
	return &c, c.Check()
}

// Check checks the values of an S3 configuration, naming the first field
// that is wrong.
func (c *S3Config) Check() error {
	if c.Endpoint == "" {
		return configErrorf("endpoint", "an S3 file store needs an endpoint, the URL of the S3 service, e.g. https://s3.eu-west-1.amazonaws.com")
	}
	u, err := url.Parse(c.Endpoint)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return configErrorf("endpoint", "%q is not an http:// or https:// URL", c.Endpoint)
	}
	if u.User != nil {
		return configErrorf("endpoint", "the endpoint URL must not carry a user or password; %s", CredentialsHelp)
	}
	if (u.Path != "" && u.Path != "/") || u.RawQuery != "" || u.Fragment != "" {
		return configErrorf("endpoint", "%q must be a scheme and host only (the bucket goes in bucket, a key prefix in prefix)", c.Endpoint)
	}
	if err := checkBucketName(c.Bucket); err != nil {
		return err
	}
	if strings.HasPrefix(c.Prefix, "/") || strings.Contains(c.Prefix, "//") || len(c.Prefix) > 512 {
		return configErrorf("prefix", "%q must not start with / nor hold //, and have at most 512 characters", c.Prefix)
	}
	if strings.ContainsAny(c.Prefix, "\x00\\") {
		return configErrorf("prefix", "%q must not hold NUL or backslash characters", c.Prefix)
	}
	if c.CredentialsFile != "" && !filepath.IsAbs(c.CredentialsFile) {
		return configErrorf("credentials_file", "%q must be an absolute path", c.CredentialsFile)
	}
	if c.CredentialsProfile != "" && c.CredentialsFile == "" {
		return configErrorf("credentials_profile", "is a section of credentials_file, which is not set")
	}
	if c.CAFile != "" && !filepath.IsAbs(c.CAFile) {
		return configErrorf("ca_file", "%q must be an absolute path", c.CAFile)
	}
	if c.CAFile != "" && u.Scheme != "https" {
		return configErrorf("ca_file", "is for TLS, but the endpoint is plain http://")
	}
	if e := time.Duration(c.PresignedExpiry); e != 0 && (e < time.Second || e > MaxPresignedExpiry) {
		return configErrorf("presigned_expiry", "%s is outside 1s to 168h (7 days, S3's limit)", e)
	}
	if c.PresignedExpiry != 0 && !c.PresignedDownloads {
		return configErrorf("presigned_expiry", "applies to presigned downloads, which are off: set presigned_downloads too")
	}
	if c.PartSize != 0 && (c.PartSize < MinPartSize || c.PartSize > MaxPartSize) {
		return configErrorf("part_size", "%d is outside %d (5 MiB) to %d (5 GiB), S3's limits for a part", c.PartSize, MinPartSize, int64(MaxPartSize))
	}
	if c.MaxAttempts != 0 && (c.MaxAttempts < 1 || c.MaxAttempts > 20) {
		return configErrorf("max_attempts", "%d is outside 1 to 20", c.MaxAttempts)
	}
	if a := time.Duration(c.AbandonedUploadAge); a != 0 && a < time.Minute {
		return configErrorf("abandoned_upload_age", "%s is too short: uploads under way would be aborted; give at least 1m", a)
	}
	return nil
}

// checkBucketName applies S3's rules for bucket names, so that a typo is
// a clear 400 rather than an obscure answer of the endpoint.
func checkBucketName(b string) error {
	if b == "" {
		return configErrorf("bucket", "an S3 file store needs a bucket")
	}
	if len(b) < 3 || len(b) > 63 {
		return configErrorf("bucket", "%q must have 3 to 63 characters", b)
	}
	for i, r := range b {
		ok := r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || (r == '-' || r == '.') && i > 0 && i < len(b)-1
		if !ok {
			return configErrorf("bucket", "%q may hold lower-case letters, digits, dots and hyphens, and start and end with a letter or digit", b)
		}
	}
	return nil
}

func (c *S3Config) prefix() string {
	if c.Prefix == "" || strings.HasSuffix(c.Prefix, "/") {
		return c.Prefix
	}
	return c.Prefix + "/"
}

func (c *S3Config) partSize() int64 {
	if c.PartSize == 0 {
		return DefaultPartSize
	}
	return c.PartSize
}

func (c *S3Config) maxAttempts() int {
	if c.MaxAttempts == 0 {
		return DefaultMaxAttempts
	}
	return int(c.MaxAttempts)
}

func (c *S3Config) presignedExpiry() time.Duration {
	if c.PresignedExpiry == 0 {
		return DefaultPresignedExpiry
	}
	return time.Duration(c.PresignedExpiry)
}

func (c *S3Config) abandonedUploadAge() time.Duration {
	if c.AbandonedUploadAge == 0 {
		return DefaultAbandonedUploadAge
	}
	return time.Duration(c.AbandonedUploadAge)
}

// ParseConfig checks the configuration of a file store of the given
// backend, strictly (see ParseS3Config), and returns it in its canonical
// form: the same JSON object, re-encoded without insignificant spacing.
// The API stores that form.
func ParseConfig(backend model.FileStoreBackend, raw json.RawMessage) (json.RawMessage, error) {
	var c any
	var err error
	switch backend {
	case model.BackendLocal:
		c, err = ParseLocalConfig(raw)
	case model.BackendS3:
		c, err = ParseS3Config(raw)
	default:
		return nil, configErrorf("", "unknown backend %q", backend)
	}
	if err != nil {
		return nil, err
	}
	return json.Marshal(c)
}

// Redact returns a configuration fit to show: the value of every key that
// looks like a secret, and a user and password in any URL, replaced by
// "REDACTED". Configurations accepted by ParseConfig hold no secret;
// this guards what an older kiln, which accepted any object, stored.
func Redact(raw json.RawMessage) json.RawMessage {
	var m map[string]any
	if json.Unmarshal(raw, &m) != nil || m == nil {
		return raw
	}
	changed := false
	for k, v := range m {
		if looksSecret(k) {
			m[k], changed = "REDACTED", true
			continue
		}
		if s, ok := v.(string); ok {
			if u, err := url.Parse(s); err == nil && u.User != nil && u.Host != "" {
				u.User = url.User("REDACTED")
				m[k], changed = u.String(), true
			}
		}
	}
	if !changed {
		return raw
	}
	out, err := json.Marshal(m)
	if err != nil {
		return raw
	}
	return out
}
