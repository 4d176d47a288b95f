package mail

// Phrases is the wording that differs between the purposes of a mail, in
// one locale. The embedded templates are one set per locale; they take
// what a mail is for from these phrases (TemplateData.Phrases), so that a
// password reset mail says so in its subject, its text and its button.
type Phrases struct {
	// CodeName names the code, as in the subject "Your sign-in code" or
	// "登录验证码".
	CodeName string
	// Action is what the code is entered for, in a sentence such as
	// "Enter it within 10 minutes to reset your password." or
	// "请在 10 分钟内完成密码重置。".
	Action string
	// Button is the text of the link's button in the HTML part.
	Button string
}

// purposePhrases declares the wording of every purpose that has its own,
// in every locale: the default purpose ("") and codes.DefaultPurposes. A
// purpose not listed here (one added with PURPOSES) reads as the default
// purpose. Tests check that every entry names a valid purpose and has
// every locale.
var purposePhrases = map[string]map[Locale]Phrases{
	"": {
		LocaleZhCN: {CodeName: "验证码", Action: "完成验证", Button: "验证邮箱地址"},
		LocaleEN:   {CodeName: "verification code", Action: "verify your email address", Button: "Verify your email address"},
	},
	"register": {
		LocaleZhCN: {CodeName: "注册验证码", Action: "完成注册", Button: "完成注册"},
		LocaleEN:   {CodeName: "sign-up code", Action: "finish signing up", Button: "Finish signing up"},
	},
	"login": {
		LocaleZhCN: {CodeName: "登录验证码", Action: "完成登录", Button: "登录"},
		LocaleEN:   {CodeName: "sign-in code", Action: "sign in", Button: "Sign in"},
	},
	"reset_password": {
		LocaleZhCN: {CodeName: "重置密码验证码", Action: "完成密码重置", Button: "重置密码"},
		LocaleEN:   {CodeName: "password reset code", Action: "reset your password", Button: "Reset your password"},
	},
	"change_email": {
		LocaleZhCN: {CodeName: "更换邮箱验证码", Action: "确认新的邮箱地址", Button: "确认新邮箱地址"},
		LocaleEN:   {CodeName: "email change code", Action: "confirm your new email address", Button: "Confirm your new email address"},
	},
}

// phrasesFor returns the wording of purpose in loc, or the default
// purpose's when purpose has none of its own.
func phrasesFor(purpose string, loc Locale) Phrases {
	if p, ok := purposePhrases[purpose]; ok {
		return p[loc]
	}
	return purposePhrases[""][loc]
}
