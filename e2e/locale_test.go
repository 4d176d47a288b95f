package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/verifyq/verifyq/internal/grpctest"
	"github.com/verifyq/verifyq/internal/smtptest"
)

// The mail's language follows the send, through both binaries: locale
// "ja" mails Japanese; no locale and Accept-Language zh-HK mails
// Traditional Chinese; a tag no locale matches, and no locale at all,
// mail DEFAULT_LOCALE (en here); the old gateway's call mails zh-CN all
// the same; a malformed tag is refused and mails nothing.
func TestLocales(t *testing.T) {
	t.Parallel()
	s := startStack(t, map[string]string{"DEFAULT_LOCALE": "en"})
	send := func(email, locale, acceptLanguage string) (int, map[string]any) {
		t.Helper()
		body := map[string]string{"email": email}
		if locale != "" {
			body["locale"] = locale
		}
		b, err := json.Marshal(body)
		require.NoError(t, err)
		req, err := http.NewRequest(http.MethodPost, "http://"+s.api+"/v1/codes", bytes.NewReader(b))
		require.NoError(t, err)
		req.Header.Set("Content-Type", "application/json")
		if acceptLanguage != "" {
			req.Header.Set("Accept-Language", acceptLanguage)
		}
		res, err := http.DefaultClient.Do(req)
		require.NoError(t, err)
		defer res.Body.Close()
		var m map[string]any
		require.NoError(t, json.NewDecoder(res.Body).Decode(&m))
		return res.StatusCode, m
	}
	sends := []struct {
		email, locale, acceptLanguage string
		subject, lang, text           string
	}{
		{"ja@example.com", "ja", "", "確認コード", "ja", "10分以内に入力し"},
		{"hk@example.com", "", "zh-HK,zh;q=0.9,en;q=0.8", "驗證碼", "zh-TW", "請在 10 分鐘內完成驗證"},
		{"body-first@example.com", "de-AT", "ja", "Ihr Bestätigungscode", "de", "innerhalb von 10 Minuten"},
		{"dutch@example.com", "nl", "", "Your verification code", "en", "within 10 minutes"},
		{"none@example.com", "", "", "Your verification code", "en", "within 10 minutes"},
	}
	for _, tt := range sends {
		status, body := send(tt.email, tt.locale, tt.acceptLanguage)
		require.Equal(t, http.StatusAccepted, status, body)
	}
	const gateway = "gateway@example.com"
	rsp, err := grpctest.GetVarifyCode(context.Background(), t, grpctest.Dial(t, s.grpc), gateway)
	require.NoError(t, err)
	require.Equal(t, grpctest.LegacyReply{Error: 0, Email: gateway}, rsp)

	status, body := send("bad@example.com", "en_GB!", "")
	require.Equal(t, http.StatusBadRequest, status, body)
	assert.Equal(t, "invalid_locale", body["error"].(map[string]any)["code"])

	msgs := s.smtp.WaitMessages(t, len(sends)+1, 10*time.Second)
	byTo := map[string]smtptest.Message{}
	for _, m := range msgs {
		byTo[m.To[0]] = m
	}
	for _, tt := range sends {
		m, ok := byTo[tt.email]
		if !assert.True(t, ok, "no mail to %s", tt.email) {
			continue
		}
		code, _ := s.code(t, tt.email)
		assert.Equal(t, tt.subject, m.Subject, tt.email)
		assert.Equal(t, tt.lang, m.Header.Get("Content-Language"), tt.email)
		assert.Contains(t, m.Text, tt.text, tt.email)
		assert.Contains(t, m.Text, code, tt.email)
		assert.Contains(t, m.HTML, `<html lang="`+tt.lang+`">`, tt.email)
	}
	m := byTo[gateway]
	assert.Equal(t, "验证码", m.Subject, "the old gateway's mail is zh-CN whatever DEFAULT_LOCALE says")
	assert.Equal(t, "zh-CN", m.Header.Get("Content-Language"))
	assert.Len(t, s.smtp.Messages(), len(sends)+1, "the refused sends mail nothing")
}
