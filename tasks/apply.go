package tasks

import (
	"context"
	"fmt"

	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/restmapper"
)

// applier server-side-applies typed objects and reports which ones changed.
type applier struct {
	dyn    dynamic.Interface
	mapper meta.RESTMapper
}

func newApplier(cfg *rest.Config) (*applier, error) {
	dyn, err := dynamic.NewForConfig(cfg)
	if err != nil {
		return nil, fmt.Errorf("make dynamic client: %w", err)
	}
	dc, err := newDiscovery(cfg)
	if err != nil {
		return nil, err
	}
	groups, err := restmapper.GetAPIGroupResources(dc)
	if err != nil {
		return nil, fmt.Errorf("discover API resources: %w", err)
	}
	return &applier{dyn: dyn, mapper: restmapper.NewDiscoveryRESTMapper(groups)}, nil
}

// apply server-side-applies obj with field manager kubeforge and returns
// whether the stored object changed.
func (a *applier) apply(ctx context.Context, obj runtime.Object) (applied, string, error) {
	u, ok := obj.(*unstructured.Unstructured)
	if !ok {
		raw, err := runtime.DefaultUnstructuredConverter.ToUnstructured(obj)
		if err != nil {
			return applied{}, "", fmt.Errorf("convert object: %w", err)
		}
		u = &unstructured.Unstructured{Object: raw}
	}
	u = u.DeepCopy()
	unstructured.RemoveNestedField(u.Object, "metadata", "creationTimestamp")
	unstructured.RemoveNestedField(u.Object, "status")
	gvk := u.GroupVersionKind()
	name := gvk.Kind + " " + u.GetNamespace() + "/" + u.GetName()
	m, err := a.mapper.RESTMapping(gvk.GroupKind(), gvk.Version)
	if err != nil {
		return applied{}, name, fmt.Errorf("map %s: %w", name, err)
	}
	var ri dynamic.ResourceInterface = a.dyn.Resource(m.Resource)
	if m.Scope.Name() == meta.RESTScopeNameNamespace {
		ri = a.dyn.Resource(m.Resource).Namespace(u.GetNamespace())
	}
	var before *unstructured.Unstructured
	if cur, err := ri.Get(ctx, u.GetName(), metav1.GetOptions{}); err == nil {
		before = cur
	} else if !apierrors.IsNotFound(err) {
		return applied{}, name, fmt.Errorf("get %s: %w", name, err)
	}
	after, err := ri.Apply(ctx, u.GetName(), u, metav1.ApplyOptions{FieldManager: "kubeforge", Force: true})
	if err != nil {
		return applied{}, name, fmt.Errorf("apply %s: %w", name, err)
	}
	if before == nil {
		return applied{changed: true, specChanged: true}, name, nil
	}
	// The API server bumps the generation of a workload whose spec changed
	// (a DaemonSet's pods are then replaced); metadata alone does not.
	return applied{changed: after.GetResourceVersion() != before.GetResourceVersion(),
		specChanged: after.GetGeneration() != before.GetGeneration()}, name, nil
}

// dryRun server-side-applies obj as apply would, without persisting it, and
// returns "create" when it does not exist, "change" when applying would change
// it, "" when it is as wanted.
func (a *applier) dryRun(ctx context.Context, obj runtime.Object) (string, string, error) {
	raw, err := runtime.DefaultUnstructuredConverter.ToUnstructured(obj)
	if err != nil {
		return "", "", fmt.Errorf("convert object: %w", err)
	}
	u := &unstructured.Unstructured{Object: raw}
	unstructured.RemoveNestedField(u.Object, "metadata", "creationTimestamp")
	unstructured.RemoveNestedField(u.Object, "status")
	gvk := u.GroupVersionKind()
	name := objectName(u)
	m, err := a.mapper.RESTMapping(gvk.GroupKind(), gvk.Version)
	if err != nil {
		return "", name, fmt.Errorf("map %s: %w", name, err)
	}
	var ri dynamic.ResourceInterface = a.dyn.Resource(m.Resource)
	if m.Scope.Name() == meta.RESTScopeNameNamespace {
		ri = a.dyn.Resource(m.Resource).Namespace(u.GetNamespace())
	}
	before, err := ri.Get(ctx, u.GetName(), metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return "create", name, nil
	} else if err != nil {
		return "", name, fmt.Errorf("get %s: %w", name, err)
	}
	after, err := ri.Apply(ctx, u.GetName(), u, metav1.ApplyOptions{FieldManager: "kubeforge", Force: true, DryRun: []string{metav1.DryRunAll}})
	if err != nil {
		return "", name, fmt.Errorf("apply %s (dry run): %w", name, err)
	}
	strip := func(o *unstructured.Unstructured) map[string]any {
		c := o.DeepCopy()
		for _, f := range [][]string{{"metadata", "managedFields"}, {"metadata", "resourceVersion"}, {"metadata", "generation"}, {"status"}} {
			unstructured.RemoveNestedField(c.Object, f...)
		}
		return c.Object
	}
	if equality.Semantic.DeepEqual(strip(before), strip(after)) {
		return "", name, nil
	}
	return "change", name, nil
}

// objectName is how a plan names an object: "Kind namespace/name".
func objectName(obj runtime.Object) string {
	acc, err := meta.Accessor(obj)
	if err != nil {
		return obj.GetObjectKind().GroupVersionKind().Kind
	}
	return obj.GetObjectKind().GroupVersionKind().Kind + " " + acc.GetNamespace() + "/" + acc.GetName()
}

// applied is what an apply did: the object was created or changed, and its
// spec with it (created counts as both).
type applied struct {
	changed, specChanged bool
}
