package metrics_test

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	authnv1 "k8s.io/api/authentication/v1"
	authzv1 "k8s.io/api/authorization/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/seine-cni/seine/core/metrics"
)

// fakeAPIServer answers TokenReviews and SubjectAccessReviews as a
// kube-apiserver would (the delegating authenticator talks HTTP to it, so
// a fake clientset does not do).
func fakeAPIServer(t *testing.T, users map[string]string, allowed func(user, verb, path string) bool) (*kubernetes.Clientset, func() []string) {
	var mu sync.Mutex
	var reviews []string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		switch r.URL.Path {
		case "/apis/authentication.k8s.io/v1/tokenreviews":
			var tr authnv1.TokenReview
			if err := json.NewDecoder(r.Body).Decode(&tr); err != nil {
				http.Error(w, err.Error(), http.StatusBadRequest)
				return
			}
			user, ok := users[tr.Spec.Token]
			tr.Status = authnv1.TokenReviewStatus{Authenticated: ok, User: authnv1.UserInfo{Username: user}}
			json.NewEncoder(w).Encode(&tr)
		case "/apis/authorization.k8s.io/v1/subjectaccessreviews":
			var sar authzv1.SubjectAccessReview
			if err := json.NewDecoder(r.Body).Decode(&sar); err != nil {
				http.Error(w, err.Error(), http.StatusBadRequest)
				return
			}
			nr := sar.Spec.NonResourceAttributes
			mu.Lock()
			reviews = append(reviews, sar.Spec.User+" "+nr.Verb+" "+nr.Path)
			mu.Unlock()
			sar.Status.Allowed = allowed(sar.Spec.User, nr.Verb, nr.Path)
			json.NewEncoder(w).Encode(&sar)
		default:
			t.Logf("unexpected %s %s", r.Method, r.URL.Path)
			http.NotFound(w, r)
		}
	}))
	t.Cleanup(srv.Close)
	cs, err := kubernetes.NewForConfig(&rest.Config{Host: srv.URL, ContentConfig: rest.ContentConfig{ContentType: "application/json"}})
	if err != nil {
		t.Fatal(err)
	}
	return cs, func() []string {
		mu.Lock()
		defer mu.Unlock()
		return append([]string(nil), reviews...)
	}
}

// TestAuthorized: a scrape needs a token the kube-apiserver accepts
// (TokenReview) for a user it lets get /metrics (SubjectAccessReview);
// decisions are cached.
func TestAuthorized(t *testing.T) {
	cs, reviews := fakeAPIServer(t, map[string]string{"reader-token": "reader", "other-token": "other"},
		func(user, verb, path string) bool { return user == "reader" && verb == "get" && path == "/metrics" })
	h, err := metrics.Authorized(cs.AuthenticationV1(), cs.AuthorizationV1(), http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		io.WriteString(w, "seine_agent_local_pods 1\n")
	}))
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(h)
	defer srv.Close()
	for _, c := range []struct {
		token string
		code  int
	}{{"", http.StatusUnauthorized}, {"wrong", http.StatusUnauthorized}, {"other-token", http.StatusForbidden},
		{"reader-token", http.StatusOK}, {"reader-token", http.StatusOK}} {
		req, _ := http.NewRequest(http.MethodGet, srv.URL+"/metrics", nil)
		if c.token != "" {
			req.Header.Set("Authorization", "Bearer "+c.token)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != c.code {
			t.Errorf("token %q: %d %s, want %d", c.token, resp.StatusCode, body, c.code)
		}
		if got := strings.Contains(string(body), "seine_agent_local_pods"); got != (c.code == http.StatusOK) {
			t.Errorf("token %q: body %q", c.token, body)
		}
	}
	// The second scrape of the reader was answered from the cache.
	if got, want := strings.Join(reviews(), ","), "other get /metrics,reader get /metrics"; got != want {
		t.Errorf("access reviews %q, want %q", got, want)
	}
}
