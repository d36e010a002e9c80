package controller

import (
	"context"
	"fmt"
	"strconv"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
)

// StateConfigMap is the ConfigMap in the install namespace where the
// elected controller keeps what must outlive it and every policy: the
// highest tunnel ID ever handed out.
const StateConfigMap = "nsegress-controller"

// highWaterKey is the ConfigMap's key of the tunnel-ID high-water mark.
const highWaterKey = "tunnelIDHighWater"

// highWaterStore persists the tunnel-ID high-water mark. Without it, a
// new controller (or the same one after the newest policy was deleted)
// would count up from the highest ID in use and hand the deleted policy's
// ID to the next policy at once, while nodes that have not seen the
// deletion still steer the old policy's pods with it.
//
// The elected controller is the mark's only writer, so a store reads it
// once per term of leadership (one store per term) and then keeps it.
type highWaterStore struct {
	client    kubernetes.Interface
	namespace string
	mark      int32
	loaded    bool
}

// load returns the mark, read from the ConfigMap the first time; a
// missing ConfigMap or key is 0.
func (s *highWaterStore) load(ctx context.Context) (int32, error) {
	if s.loaded {
		return s.mark, nil
	}
	mark, err := s.read(ctx)
	if err != nil {
		return 0, err
	}
	s.mark, s.loaded = mark, true
	return mark, nil
}

// read reads the mark from the ConfigMap.
func (s *highWaterStore) read(ctx context.Context) (int32, error) {
	cm, err := s.client.CoreV1().ConfigMaps(s.namespace).Get(ctx, StateConfigMap, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("read ConfigMap %s/%s: %w", s.namespace, StateConfigMap, err)
	}
	v, ok := cm.Data[highWaterKey]
	if !ok {
		return 0, nil
	}
	n, err := strconv.ParseInt(v, 10, 32)
	if err != nil || n < 0 {
		return 0, fmt.Errorf("ConfigMap %s/%s: %s %q is not a tunnel ID", s.namespace, StateConfigMap, highWaterKey, v)
	}
	return int32(n), nil
}

// store writes the mark, creating the ConfigMap when it is missing. An
// update that conflicts fails; the next reconcile reads and tries again.
func (s *highWaterStore) store(ctx context.Context, mark int32) error {
	cms := s.client.CoreV1().ConfigMaps(s.namespace)
	cm, err := cms.Get(ctx, StateConfigMap, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		cm = &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: StateConfigMap, Namespace: s.namespace},
			Data: map[string]string{highWaterKey: strconv.Itoa(int(mark))}}
		if _, err := cms.Create(ctx, cm, metav1.CreateOptions{}); err != nil {
			return fmt.Errorf("create ConfigMap %s/%s: %w", s.namespace, StateConfigMap, err)
		}
		s.mark, s.loaded = mark, true
		return nil
	}
	if err != nil {
		return fmt.Errorf("read ConfigMap %s/%s: %w", s.namespace, StateConfigMap, err)
	}
	if cm.Data == nil {
		cm.Data = map[string]string{}
	}
	cm.Data[highWaterKey] = strconv.Itoa(int(mark))
	if _, err := cms.Update(ctx, cm, metav1.UpdateOptions{}); err != nil {
		return fmt.Errorf("update ConfigMap %s/%s: %w", s.namespace, StateConfigMap, err)
	}
	s.mark, s.loaded = mark, true
	return nil
}
