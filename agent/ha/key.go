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
// creating the Secret with a random key when it does not exist (the first
// agent to start creates it; the others read it). A copy is kept in
// cache (mode 0600), so that an agent restarted while the API server is
// down still speaks with its peers.
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

func fetchKey(ctx context.Context, client kubernetes.Interface, namespace, name string) ([]byte, error) {
	for range 3 {
		s, err := client.CoreV1().Secrets(namespace).Get(ctx, name, metav1.GetOptions{})
		if err == nil {
			k := s.Data[KeySecretField]
			if len(k) < keySize {
				return nil, fmt.Errorf("secret %s/%s: field %q holds %d bytes, want at least %d", namespace, name, KeySecretField, len(k), keySize)
			}
			return k, nil
		}
		if !apierrors.IsNotFound(err) {
			return nil, fmt.Errorf("read the HA key (secret %s/%s): %w", namespace, name, err)
		}
		k := make([]byte, keySize)
		_, _ = rand.Read(k) // crypto/rand never fails on Linux
		_, err = client.CoreV1().Secrets(namespace).Create(ctx, &corev1.Secret{
			ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: namespace,
				Labels: map[string]string{"app.kubernetes.io/part-of": "nsegress"}},
			Data: map[string][]byte{KeySecretField: k},
		}, metav1.CreateOptions{})
		if err == nil {
			return k, nil
		}
		if !apierrors.IsAlreadyExists(err) {
			return nil, fmt.Errorf("create the HA key (secret %s/%s): %w", namespace, name, err)
		}
		// Another agent created it first: read theirs.
	}
	return nil, errors.New("the HA key secret keeps appearing and disappearing")
}
