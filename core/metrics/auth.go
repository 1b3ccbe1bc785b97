package metrics

import (
	"context"
	"crypto/sha256"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"time"

	authnv1 "k8s.io/api/authentication/v1"
	authzv1 "k8s.io/api/authorization/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	authenticationv1 "k8s.io/client-go/kubernetes/typed/authentication/v1"
	authorizationv1 "k8s.io/client-go/kubernetes/typed/authorization/v1"
)

// How long decisions are kept, as the kube-apiserver's delegating
// authenticator and authorizer keep them; and how many.
const (
	authnTTL      = 2 * time.Minute
	authzAllowTTL = 5 * time.Minute
	authzDenyTTL  = 30 * time.Second
	reviewTimeout = 10 * time.Second
	cacheMax      = 1024
)

// Authorized wraps h so that only clients the kube-apiserver authenticates
// (a bearer token, through a TokenReview) and authorizes for get on the
// request's path (a non-resource URL, through a SubjectAccessReview) reach
// it: 401 without valid credentials, 403 without the right, 503 when the
// kube-apiserver cannot say. Decisions are cached as the kube-apiserver's
// delegating authenticator and authorizer cache them. This is how
// seine-controller's API (k8s.io/apiserver) treats /metrics, for a process
// without an API server of its own (k8s.io/apiserver's delegating
// factories would double the agent's binary: 49 to 105 MB, measured).
func Authorized(authn authenticationv1.AuthenticationV1Interface, authz authorizationv1.AuthorizationV1Interface, h http.Handler) (http.Handler, error) {
	if authn == nil || authz == nil {
		return nil, fmt.Errorf("delegated authorization needs the kube-apiserver's authentication and authorization APIs")
	}
	d := &delegated{authn: authn, authz: authz, users: map[[32]byte]cachedUser{}, decisions: map[string]cachedDecision{}, now: time.Now}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		token, ok := bearer(r)
		if !ok {
			http.Error(w, "Unauthorized", http.StatusUnauthorized)
			return
		}
		user, ok, err := d.authenticate(r.Context(), token)
		if err != nil {
			http.Error(w, "authentication: "+err.Error(), http.StatusServiceUnavailable)
			return
		}
		if !ok {
			http.Error(w, "Unauthorized", http.StatusUnauthorized)
			return
		}
		allowed, reason, err := d.authorize(r.Context(), user, r.URL.Path)
		if err != nil {
			http.Error(w, "authorization: "+err.Error(), http.StatusServiceUnavailable)
			return
		}
		if !allowed {
			msg := fmt.Sprintf("Forbidden: user %q may not get %s", user.Username, r.URL.Path)
			if reason != "" {
				msg += ": " + reason
			}
			http.Error(w, msg, http.StatusForbidden)
			return
		}
		h.ServeHTTP(w, r)
	}), nil
}

func bearer(r *http.Request) (string, bool) {
	v := r.Header.Get("Authorization")
	scheme, token, ok := strings.Cut(v, " ")
	if !ok || !strings.EqualFold(scheme, "bearer") {
		return "", false
	}
	token = strings.TrimSpace(token)
	return token, token != ""
}

type cachedUser struct {
	user    authnv1.UserInfo
	ok      bool
	expires time.Time
}

type cachedDecision struct {
	allowed bool
	reason  string
	expires time.Time
}

// delegated asks the kube-apiserver and caches its answers (tokens by
// their hash, never in the clear).
type delegated struct {
	authn authenticationv1.AuthenticationV1Interface
	authz authorizationv1.AuthorizationV1Interface
	now   func() time.Time

	mu        sync.Mutex
	users     map[[32]byte]cachedUser
	decisions map[string]cachedDecision
}

func (d *delegated) authenticate(ctx context.Context, token string) (authnv1.UserInfo, bool, error) {
	key := sha256.Sum256([]byte(token))
	d.mu.Lock()
	c, hit := d.users[key]
	d.mu.Unlock()
	if hit && d.now().Before(c.expires) {
		return c.user, c.ok, nil
	}
	ctx, cancel := context.WithTimeout(ctx, reviewTimeout)
	defer cancel()
	tr, err := d.authn.TokenReviews().Create(ctx, &authnv1.TokenReview{Spec: authnv1.TokenReviewSpec{Token: token}}, metav1.CreateOptions{})
	if err != nil {
		return authnv1.UserInfo{}, false, err
	}
	ok := tr.Status.Authenticated && tr.Status.Error == ""
	d.mu.Lock()
	if len(d.users) >= cacheMax {
		clear(d.users)
	}
	d.users[key] = cachedUser{user: tr.Status.User, ok: ok, expires: d.now().Add(authnTTL)}
	d.mu.Unlock()
	return tr.Status.User, ok, nil
}

func (d *delegated) authorize(ctx context.Context, u authnv1.UserInfo, path string) (bool, string, error) {
	key := u.Username + "\x00" + u.UID + "\x00" + strings.Join(u.Groups, ",") + "\x00" + path
	d.mu.Lock()
	c, hit := d.decisions[key]
	d.mu.Unlock()
	if hit && d.now().Before(c.expires) {
		return c.allowed, c.reason, nil
	}
	extra := map[string]authzv1.ExtraValue{}
	for k, v := range u.Extra {
		extra[k] = authzv1.ExtraValue(v)
	}
	ctx, cancel := context.WithTimeout(ctx, reviewTimeout)
	defer cancel()
	sar, err := d.authz.SubjectAccessReviews().Create(ctx, &authzv1.SubjectAccessReview{Spec: authzv1.SubjectAccessReviewSpec{
		User: u.Username, UID: u.UID, Groups: u.Groups, Extra: extra,
		NonResourceAttributes: &authzv1.NonResourceAttributes{Verb: "get", Path: path},
	}}, metav1.CreateOptions{})
	if err != nil {
		return false, "", err
	}
	allowed := sar.Status.Allowed && !sar.Status.Denied
	ttl := authzDenyTTL
	if allowed {
		ttl = authzAllowTTL
	}
	d.mu.Lock()
	if len(d.decisions) >= cacheMax {
		clear(d.decisions)
	}
	d.decisions[key] = cachedDecision{allowed: allowed, reason: sar.Status.Reason, expires: d.now().Add(ttl)}
	d.mu.Unlock()
	return allowed, sar.Status.Reason, nil
}
