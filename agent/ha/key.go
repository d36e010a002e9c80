package ha

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
)

// KeySecretField is the field of the key Secret that holds the key.
const KeySecretField = "key"

// keySize is the length of a generated key: HMAC-SHA256's block of
// entropy.
const keySize = 32

// LoadKey returns the cluster's HA key from the Secret namespace/name,
// which the controller creates (EnsureKey): an agent only reads it. A copy
// is kept in cache (mode 0600), so that an agent restarted while the API
// server is down still speaks with its peers; the cached copy is returned
// when the API cannot be asked. ErrNoKey means the Secret does not exist
// (yet) and nothing is cached.
func LoadKey(ctx context.Context, client kubernetes.Interface, namespace, name, cache string) ([]byte, error) {
	key, err := fetchKey(ctx, client, namespace, name)
	if err != nil {
		if b, cerr := os.ReadFile(cache); cerr == nil && len(b) >= keySize {
			return b, nil
		}
		return nil, err
	}
	if b, cerr := os.ReadFile(cache); cerr != nil || string(b) != string(key) {
		if err := os.MkdirAll(filepath.Dir(cache), 0o700); err != nil {
			return key, fmt.Errorf("cache the HA key: %w", err)
		}
		tmp := cache + ".tmp"
		if err := os.WriteFile(tmp, key, 0o600); err != nil {
			return key, fmt.Errorf("cache the HA key: %w", err)
		}
		if err := os.Rename(tmp, cache); err != nil {
			return key, fmt.Errorf("cache the HA key: %w", err)
		}
	}
	return key, nil
}

// ErrNoKey: the key Secret does not exist.
var ErrNoKey = errors.New("the HA key secret does not exist (the controller creates it)")

func fetchKey(ctx context.Context, client kubernetes.Interface, namespace, name string) ([]byte, error) {
	s, err := client.CoreV1().Secrets(namespace).Get(ctx, name, metav1.GetOptions{})
	switch {
	case apierrors.IsNotFound(err):
		return nil, fmt.Errorf("secret %s/%s: %w", namespace, name, ErrNoKey)
	case err != nil:
		return nil, fmt.Errorf("read the HA key (secret %s/%s): %w", namespace, name, err)
	}
	k := s.Data[KeySecretField]
	if len(k) < keySize {
		return nil, fmt.Errorf("secret %s/%s: field %q holds %d bytes, want at least %d", namespace, name, KeySecretField, len(k), keySize)
	}
	return k, nil
}

// EnsureKey creates the Secret namespace/name with a random key when it
// does not exist. The controller calls it: agents can read the Secret but
// not create Secrets.
func EnsureKey(ctx context.Context, client kubernetes.Interface, namespace, name string) error {
	_, err := fetchKey(ctx, client, namespace, name)
	if !errors.Is(err, ErrNoKey) {
		return err
	}
	k := make([]byte, keySize)
	_, _ = rand.Read(k) // crypto/rand never fails on Linux
	_, err = client.CoreV1().Secrets(namespace).Create(ctx, &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: namespace,
			Labels: map[string]string{"app.kubernetes.io/part-of": "nsegress"}},
		Data: map[string][]byte{KeySecretField: k},
	}, metav1.CreateOptions{})
	if err != nil && !apierrors.IsAlreadyExists(err) { // another replica was first
		return fmt.Errorf("create the HA key (secret %s/%s): %w", namespace, name, err)
	}
	return nil
}
