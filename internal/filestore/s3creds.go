package filestore

import (
	"fmt"
	"os"
	"sync"
	"time"

	"github.com/minio/minio-go/v7/pkg/credentials"
	"gopkg.in/ini.v1"
)

// Environment variables that carry S3 credentials. The KILN_S3_ ones come
// first, so that a host whose AWS_ variables serve other tools can give
// kiln keys of its own.
const (
	EnvAccessKeyID     = "KILN_S3_ACCESS_KEY_ID"
	EnvSecretAccessKey = "KILN_S3_SECRET_ACCESS_KEY"
	EnvSessionToken    = "KILN_S3_SESSION_TOKEN"
)

// Credentials finds the keys of an S3 configuration: from
// CredentialsFile when it is set; else from KILN_S3_ACCESS_KEY_ID and
// KILN_S3_SECRET_ACCESS_KEY (and KILN_S3_SESSION_TOKEN); else from
// AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (and AWS_SESSION_TOKEN). It
// also says where they come from, for messages (never the keys
// themselves). The environment is read now; a credentials file at every
// request after it changed, so that rotated keys are picked up.
func (c *S3Config) Credentials() (*credentials.Credentials, string, error) {
	if c.CredentialsFile != "" {
		p := &fileCredentials{path: c.CredentialsFile, profile: c.CredentialsProfile}
		if p.profile == "" {
			p.profile = "default"
		}
		if _, err := p.read(); err != nil {
			return nil, "", &ConfigError{Field: "credentials_file", Message: err.Error()}
		}
		return credentials.New(p), fmt.Sprintf("the credentials file %s (profile %s)", p.path, p.profile), nil
	}
	for _, env := range [][3]string{
		{EnvAccessKeyID, EnvSecretAccessKey, EnvSessionToken},
		{"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"},
	} {
		id, secret := os.Getenv(env[0]), os.Getenv(env[1])
		switch {
		case id != "" && secret != "":
			return credentials.NewStaticV4(id, secret, os.Getenv(env[2])), fmt.Sprintf("the environment (%s)", env[0]), nil
		case id != "" || secret != "":
			return nil, "", &ConfigError{Field: "credentials_file", Message: fmt.Sprintf(
				"only one of %s and %s is set in the server's environment; set both", env[0], env[1])}
		}
	}
	return nil, "", &ConfigError{Field: "credentials_file", Message: "no S3 credentials: " + CredentialsHelp}
}

// fileCredentials reads keys from an AWS shared credentials file. Unlike
// the AWS tools it never runs a credential_process: the file's name comes
// through the API, and a command line in it must not become a way to run
// programs on the server.
type fileCredentials struct {
	path, profile string

	mu      sync.Mutex
	modTime time.Time
	size    int64
}

// read loads the profile's keys and remembers which version of the file
// they come from.
func (p *fileCredentials) read() (credentials.Value, error) {
	st, err := os.Stat(p.path)
	if err != nil {
		return credentials.Value{}, fmt.Errorf("cannot read the credentials file: %v", err)
	}
	f, err := ini.Load(p.path)
	if err != nil {
		return credentials.Value{}, fmt.Errorf("the credentials file %s is not in the AWS credentials format (INI): %v", p.path, err)
	}
	sec, err := f.GetSection(p.profile)
	if err != nil {
		return credentials.Value{}, fmt.Errorf("the credentials file %s has no [%s] section", p.path, p.profile)
	}
	v := credentials.Value{
		AccessKeyID:     sec.Key("aws_access_key_id").String(),
		SecretAccessKey: sec.Key("aws_secret_access_key").String(),
		SessionToken:    sec.Key("aws_session_token").String(),
		SignerType:      credentials.SignatureV4,
	}
	if v.AccessKeyID == "" || v.SecretAccessKey == "" {
		return credentials.Value{}, fmt.Errorf("section [%s] of the credentials file %s needs aws_access_key_id and aws_secret_access_key", p.profile, p.path)
	}
	p.mu.Lock()
	p.modTime, p.size = st.ModTime(), st.Size()
	p.mu.Unlock()
	return v, nil
}

// Retrieve reads the file.
func (p *fileCredentials) Retrieve() (credentials.Value, error) { return p.read() }

// RetrieveWithCredContext reads the file.
func (p *fileCredentials) RetrieveWithCredContext(*credentials.CredContext) (credentials.Value, error) {
	return p.read()
}

// IsExpired reports whether the file changed since it was read.
func (p *fileCredentials) IsExpired() bool {
	st, err := os.Stat(p.path)
	if err != nil {
		return true
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	return !st.ModTime().Equal(p.modTime) || st.Size() != p.size
}
