package backup

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"strings"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"
)

// S3Options say where an S3 destination is.
type S3Options struct {
	// Endpoint is host:port, without a scheme.
	Endpoint string
	Bucket   string
	// Prefix is put before every object name ("backups/" or "backups":
	// a slash is added when missing).
	Prefix string
	Region string
	// Insecure talks plain HTTP instead of HTTPS (an in-cluster server).
	Insecure bool
	// AccessKey and SecretKey are the credentials; the sub-commands read
	// them from AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY.
	AccessKey, SecretKey string
}

// S3 is a bucket (and prefix) of an S3-compatible object store.
type S3 struct {
	c      *minio.Client
	bucket string
	prefix string
	desc   string
}

// s3PartSize bounds the memory of an upload of unknown length: minio-go
// buffers one part at a time (its default for an unknown length is far
// larger, sized for 5 TiB objects).
const s3PartSize = 16 << 20

// NewS3 checks the options and that the bucket exists.
func NewS3(ctx context.Context, o S3Options) (*S3, error) {
	switch {
	case o.Endpoint == "" || strings.Contains(o.Endpoint, "://"):
		return nil, fmt.Errorf("s3 endpoint must be host:port without a scheme, not %q", o.Endpoint)
	case o.Bucket == "":
		return nil, errors.New("s3 bucket is required")
	case o.AccessKey == "" || o.SecretKey == "":
		return nil, errors.New("s3 credentials are missing: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY")
	}
	c, err := minio.New(o.Endpoint, &minio.Options{
		Creds:  credentials.NewStaticV4(o.AccessKey, o.SecretKey, ""),
		Secure: !o.Insecure,
		Region: o.Region,
	})
	if err != nil {
		return nil, fmt.Errorf("s3 endpoint %s: %w", o.Endpoint, err)
	}
	prefix := o.Prefix
	if prefix != "" && !strings.HasSuffix(prefix, "/") {
		prefix += "/"
	}
	s := &S3{c: c, bucket: o.Bucket, prefix: prefix, desc: fmt.Sprintf("s3 bucket %s/%s at %s", o.Bucket, prefix, o.Endpoint)}
	ok, err := c.BucketExists(ctx, o.Bucket)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", s.desc, err)
	}
	if !ok {
		return nil, fmt.Errorf("%s: the bucket does not exist (create it first; backups never create buckets)", s.desc)
	}
	return s, nil
}

func (s *S3) String() string { return s.desc }

// Put uploads name. A single PUT, or a multipart upload that is completed
// only after the last part: the object appears whole or not at all, and a
// failed multipart upload is aborted.
func (s *S3) Put(ctx context.Context, name string, r io.Reader) error {
	if err := checkObjectName(name); err != nil {
		return err
	}
	_, err := s.c.PutObject(ctx, s.bucket, s.prefix+name, r, -1, minio.PutObjectOptions{
		PartSize:    s3PartSize,
		ContentType: contentType(name),
	})
	if err != nil {
		return fmt.Errorf("uploading %s to %s: %w", name, s, err)
	}
	return nil
}

func contentType(name string) string {
	if strings.HasSuffix(name, sumSuffix) {
		return "text/plain; charset=utf-8"
	}
	return "application/gzip"
}

// Open downloads name.
func (s *S3) Open(ctx context.Context, name string) (io.ReadCloser, error) {
	if err := checkObjectName(name); err != nil {
		return nil, err
	}
	o, err := s.c.GetObject(ctx, s.bucket, s.prefix+name, minio.GetObjectOptions{})
	if err == nil {
		// GetObject is lazy: Stat finds a missing object now.
		_, err = o.Stat()
	}
	if err != nil {
		if o != nil {
			_ = o.Close()
		}
		if r := minio.ToErrorResponse(err); r.Code == "NoSuchKey" || r.StatusCode == http.StatusNotFound {
			return nil, fmt.Errorf("%s in %s: %w", name, s, fs.ErrNotExist)
		}
		return nil, fmt.Errorf("downloading %s from %s: %w", name, s, err)
	}
	return o, nil
}

// List lists the objects directly under the prefix.
func (s *S3) List(ctx context.Context) ([]string, error) {
	var out []string
	for o := range s.c.ListObjects(ctx, s.bucket, minio.ListObjectsOptions{Prefix: s.prefix}) {
		if o.Err != nil {
			return nil, o.Err
		}
		if name := strings.TrimPrefix(o.Key, s.prefix); name != "" && !strings.Contains(name, "/") {
			out = append(out, name)
		}
	}
	return out, nil
}

// Delete removes name.
func (s *S3) Delete(ctx context.Context, name string) error {
	if err := checkObjectName(name); err != nil {
		return err
	}
	if err := s.c.RemoveObject(ctx, s.bucket, s.prefix+name, minio.RemoveObjectOptions{}); err != nil {
		return fmt.Errorf("deleting %s from %s: %w", name, s, err)
	}
	return nil
}
