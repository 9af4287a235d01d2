package filestore_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/kiln-build/kiln/internal/filestore"
)

// ExampleOpenBucket writes an object to S3 with the configuration keys a
// file store uses (credentials from the environment or credentials_file),
// as a report written to s3://reports-bucket/kiln/ would be. The example
// needs an S3 endpoint, so it is compiled but not run.
func ExampleOpenBucket() {
	raw := json.RawMessage(`{"endpoint": "https://s3.eu-west-1.amazonaws.com", "bucket": "reports-bucket", "prefix": "kiln/"}`)
	cfg, err := filestore.ParseS3Config(raw) // strict: a *ConfigError names the key
	if err != nil {
		fmt.Println(err)
		return
	}
	bucket, err := filestore.OpenBucket(*cfg)
	if err != nil {
		fmt.Println(err) // e.g. no credentials in the environment
		return
	}
	defer bucket.Close()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := bucket.Probe(ctx); err != nil {
		fmt.Println(err) // a *ProbeError naming the key to fix
		return
	}
	doc := []byte(`{"schema_version": 1}`)
	name := "report-" + time.Now().UTC().Format("20060102T150405Z") + ".json"
	if err := bucket.Put(ctx, name, bytes.NewReader(doc), int64(len(doc)), "application/json"); err != nil {
		fmt.Println(err) // a *filestore.UnavailableError when S3 is down
		return
	}
	fmt.Println("written to", bucket.Key(name))
}
