package client

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/sessiond/sessiond/protocol"
)

// API is an authenticated HTTP client of /api/v1.
type API struct {
	Base  string
	Token string
	HTTP  *http.Client
	// PoPKey, when set, signs every request with a proof of possession.
	PoPKey []byte
	// Header is sent with every request (e.g. the User-Agent of the device that signed in:
	// the server compares it with the login's).
	Header http.Header
}

// WithProof makes the client sign its requests with key (sessions that require it).
func (a *API) WithProof(key []byte) *API {
	a.PoPKey = key
	return a
}

// NewAPI returns an API client for base with token.
func NewAPI(base, token string) *API {
	return &API{Base: strings.TrimRight(base, "/"), Token: token, HTTP: http.DefaultClient}
}

// Response is a raw API answer.
type Response struct {
	Status int
	Header http.Header
	Body   []byte
}

// Err returns the API error of a non-2xx answer as *Error, or nil.
func (r Response) Err() error {
	if r.Status >= 200 && r.Status < 300 {
		return nil
	}
	var e struct {
		Code    string `json:"code"`
		Message string `json:"message"`
	}
	if json.Unmarshal(r.Body, &e) != nil || e.Code == "" {
		return fmt.Errorf("HTTP %d", r.Status)
	}
	return &Error{Code: e.Code, Message: e.Message}
}

// Do sends a request; body may be nil, []byte (sent raw) or a value sent as JSON.
func (a *API) Do(ctx context.Context, method, path string, body any, header http.Header) (Response, error) {
	var rd io.Reader
	var raw []byte
	ctype := ""
	switch b := body.(type) {
	case nil:
	case []byte:
		raw, ctype = b, "application/octet-stream"
	default:
		data, err := json.Marshal(b)
		if err != nil {
			return Response{}, err
		}
		raw, ctype = data, "application/json"
	}
	if raw != nil {
		rd = bytes.NewReader(raw)
	}
	req, err := http.NewRequestWithContext(ctx, method, a.Base+path, rd)
	if err != nil {
		return Response{}, err
	}
	if ctype != "" {
		req.Header.Set("Content-Type", ctype)
	}
	if a.Token != "" {
		req.Header.Set("Authorization", "Bearer "+a.Token)
	}
	if a.PoPKey != nil {
		req.Header.Set("Sessiond-PoP", protocol.SignProof(a.PoPKey, method, req.URL.RequestURI(), time.Now().UnixMilli(), raw))
	}
	for k, v := range a.Header {
		req.Header[k] = v
	}
	for k, v := range header {
		req.Header[k] = v
	}
	hc := a.HTTP
	if hc == nil {
		hc = http.DefaultClient
	}
	resp, err := hc.Do(req)
	if err != nil {
		return Response{}, err
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		return Response{}, err
	}
	return Response{Status: resp.StatusCode, Header: resp.Header, Body: data}, nil
}

// Session returns the token's session.
func (a *API) Session(ctx context.Context) (Session, error) {
	r, err := a.Do(ctx, http.MethodGet, "/api/v1/session", nil, nil)
	if err != nil {
		return Session{}, err
	}
	if err := r.Err(); err != nil {
		return Session{}, err
	}
	var out struct {
		Session Session `json:"session"`
	}
	return out.Session, json.Unmarshal(r.Body, &out)
}

// Refresh rotates the token and switches the client to the new one.
func (a *API) Refresh(ctx context.Context) (Refreshed, error) {
	r, err := a.Do(ctx, http.MethodPost, "/api/v1/session/refresh", nil, nil)
	if err != nil {
		return Refreshed{}, err
	}
	if err := r.Err(); err != nil {
		return Refreshed{}, err
	}
	var out Refreshed
	if err := json.Unmarshal(r.Body, &out); err != nil {
		return Refreshed{}, err
	}
	a.Token = out.Token
	return out, nil
}
