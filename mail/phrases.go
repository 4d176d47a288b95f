package mail

import (
	"strconv"

	"golang.org/x/text/feature/plural"
	"golang.org/x/text/language"
)

// Phrases is the wording that differs between the purposes of a mail, in
// one locale. The embedded templates are one set per locale; they take
// what a mail is for from these phrases (TemplateData.Phrases), so that a
// password reset mail says so in its subject, its text and its button.
// Each locale's phrases are written for the sentences of its own
// templates: an English Action is an infinitive ("reset your password"),
// a Japanese one a noun (パスワードの再設定), a Korean one a noun with its
// object particle (비밀번호 재설정을).
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
		LocaleZhTW: {CodeName: "驗證碼", Action: "完成驗證", Button: "驗證電子郵件地址"},
		LocaleEN:   {CodeName: "verification code", Action: "verify your email address", Button: "Verify your email address"},
		LocaleJA:   {CodeName: "確認コード", Action: "メールアドレスの確認", Button: "メールアドレスを確認"},
		LocaleKO:   {CodeName: "인증 코드", Action: "이메일 인증을", Button: "이메일 주소 인증"},
		LocaleES:   {CodeName: "código de verificación", Action: "verificar tu dirección de correo electrónico", Button: "Verificar correo electrónico"},
		LocaleFR:   {CodeName: "code de vérification", Action: "vérifier votre adresse e-mail", Button: "Vérifier l’adresse e-mail"},
		LocaleDE:   {CodeName: "Bestätigungscode", Action: "Ihre E-Mail-Adresse zu bestätigen", Button: "E-Mail-Adresse bestätigen"},
		LocalePtBR: {CodeName: "código de verificação", Action: "confirmar seu endereço de e-mail", Button: "Confirmar e-mail"},
		LocaleRU:   {CodeName: "код подтверждения", Action: "подтвердить адрес электронной почты", Button: "Подтвердить адрес"},
	},
	"register": {
		LocaleZhCN: {CodeName: "注册验证码", Action: "完成注册", Button: "完成注册"},
		LocaleZhTW: {CodeName: "註冊驗證碼", Action: "完成註冊", Button: "完成註冊"},
		LocaleEN:   {CodeName: "sign-up code", Action: "finish signing up", Button: "Finish signing up"},
		LocaleJA:   {CodeName: "会員登録用の確認コード", Action: "会員登録", Button: "会員登録を完了"},
		LocaleKO:   {CodeName: "회원가입 인증 코드", Action: "회원가입을", Button: "회원가입 완료"},
		LocaleES:   {CodeName: "código de registro", Action: "completar tu registro", Button: "Completar registro"},
		LocaleFR:   {CodeName: "code d’inscription", Action: "finaliser votre inscription", Button: "Finaliser l’inscription"},
		LocaleDE:   {CodeName: "Registrierungscode", Action: "Ihre Registrierung abzuschließen", Button: "Registrierung abschließen"},
		LocalePtBR: {CodeName: "código de cadastro", Action: "concluir seu cadastro", Button: "Concluir cadastro"},
		LocaleRU:   {CodeName: "код для регистрации", Action: "завершить регистрацию", Button: "Завершить регистрацию"},
	},
	"login": {
		LocaleZhCN: {CodeName: "登录验证码", Action: "完成登录", Button: "登录"},
		LocaleZhTW: {CodeName: "登入驗證碼", Action: "完成登入", Button: "登入"},
		LocaleEN:   {CodeName: "sign-in code", Action: "sign in", Button: "Sign in"},
		LocaleJA:   {CodeName: "ログイン用の確認コード", Action: "ログイン", Button: "ログイン"},
		LocaleKO:   {CodeName: "로그인 인증 코드", Action: "로그인을", Button: "로그인"},
		LocaleES:   {CodeName: "código de inicio de sesión", Action: "iniciar sesión", Button: "Iniciar sesión"},
		LocaleFR:   {CodeName: "code de connexion", Action: "vous connecter", Button: "Se connecter"},
		LocaleDE:   {CodeName: "Anmeldecode", Action: "sich anzumelden", Button: "Anmelden"},
		LocalePtBR: {CodeName: "código de login", Action: "entrar na sua conta", Button: "Entrar"},
		LocaleRU:   {CodeName: "код для входа", Action: "войти в аккаунт", Button: "Войти"},
	},
	"reset_password": {
		LocaleZhCN: {CodeName: "重置密码验证码", Action: "完成密码重置", Button: "重置密码"},
		LocaleZhTW: {CodeName: "重設密碼驗證碼", Action: "完成密碼重設", Button: "重設密碼"},
		LocaleEN:   {CodeName: "password reset code", Action: "reset your password", Button: "Reset your password"},
		LocaleJA:   {CodeName: "パスワード再設定用の確認コード", Action: "パスワードの再設定", Button: "パスワードを再設定"},
		LocaleKO:   {CodeName: "비밀번호 재설정 인증 코드", Action: "비밀번호 재설정을", Button: "비밀번호 재설정"},
		LocaleES:   {CodeName: "código para restablecer la contraseña", Action: "restablecer tu contraseña", Button: "Restablecer contraseña"},
		LocaleFR:   {CodeName: "code de réinitialisation du mot de passe", Action: "réinitialiser votre mot de passe", Button: "Réinitialiser le mot de passe"},
		LocaleDE:   {CodeName: "Code zum Zurücksetzen des Passworts", Action: "Ihr Passwort zurückzusetzen", Button: "Passwort zurücksetzen"},
		LocalePtBR: {CodeName: "código de redefinição de senha", Action: "redefinir sua senha", Button: "Redefinir senha"},
		LocaleRU:   {CodeName: "код для сброса пароля", Action: "сбросить пароль", Button: "Сбросить пароль"},
	},
	"change_email": {
		LocaleZhCN: {CodeName: "更换邮箱验证码", Action: "确认新的邮箱地址", Button: "确认新邮箱地址"},
		LocaleZhTW: {CodeName: "變更電子郵件驗證碼", Action: "確認新的電子郵件地址", Button: "確認新的電子郵件地址"},
		LocaleEN:   {CodeName: "email change code", Action: "confirm your new email address", Button: "Confirm your new email address"},
		LocaleJA:   {CodeName: "メールアドレス変更用の確認コード", Action: "新しいメールアドレスの確認", Button: "新しいメールアドレスを確認"},
		LocaleKO:   {CodeName: "이메일 변경 인증 코드", Action: "새 이메일 주소 확인을", Button: "새 이메일 주소 확인"},
		LocaleES:   {CodeName: "código para cambiar el correo electrónico", Action: "confirmar tu nueva dirección de correo electrónico", Button: "Confirmar nuevo correo electrónico"},
		LocaleFR:   {CodeName: "code de changement d’adresse e-mail", Action: "confirmer votre nouvelle adresse e-mail", Button: "Confirmer la nouvelle adresse e-mail"},
		LocaleDE:   {CodeName: "Code zum Ändern der E-Mail-Adresse", Action: "Ihre neue E-Mail-Adresse zu bestätigen", Button: "Neue E-Mail-Adresse bestätigen"},
		LocalePtBR: {CodeName: "código de alteração de e-mail", Action: "confirmar seu novo endereço de e-mail", Button: "Confirmar novo e-mail"},
		LocaleRU:   {CodeName: "код для смены адреса электронной почты", Action: "подтвердить новый адрес электронной почты", Button: "Подтвердить новый адрес"},
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

// minuteWords are the words for minutes in each locale, by CLDR plural
// category (golang.org/x/text/feature/plural picks the category of a
// number), and what goes between the number and the word (in French a
// no-break space, which keeps "10 minutes" on one line). The forms are
// those a duration takes after a number: in Russian the accusative, as in
// "Код действует 1 минуту / 2 минуты / 5 минут".
var minuteWords = map[Locale]struct {
	sep   string
	forms map[plural.Form]string
}{
	LocaleZhCN: {" ", map[plural.Form]string{plural.Other: "分钟"}},
	LocaleZhTW: {" ", map[plural.Form]string{plural.Other: "分鐘"}},
	LocaleEN:   {" ", map[plural.Form]string{plural.One: "minute", plural.Other: "minutes"}},
	LocaleJA:   {"", map[plural.Form]string{plural.Other: "分"}},
	LocaleKO:   {"", map[plural.Form]string{plural.Other: "분"}},
	LocaleES:   {" ", map[plural.Form]string{plural.One: "minuto", plural.Other: "minutos"}},
	LocaleFR:   {"\u00a0", map[plural.Form]string{plural.One: "minute", plural.Other: "minutes"}},
	LocaleDE:   {" ", map[plural.Form]string{plural.One: "Minute", plural.Other: "Minuten"}},
	LocalePtBR: {" ", map[plural.Form]string{plural.One: "minuto", plural.Other: "minutos"}},
	LocaleRU: {" ", map[plural.Form]string{plural.One: "минуту", plural.Few: "минуты", plural.Many: "минут",
		plural.Other: "минуты"}},
}

// lifetime returns minutes in words in loc, e.g. "10 minutes", "1 минуту",
// "10分". A plural category loc has no word for takes its Other word.
func lifetime(loc Locale, minutes int64) string {
	w := minuteWords[loc]
	n := minutes
	if n > 1<<30 { // MatchPlural takes an int; the last digits decide
		n = n%1000000 + 1000000
	}
	form := plural.Cardinal.MatchPlural(language.Make(string(loc)), int(n), 0, 0, 0, 0)
	word, ok := w.forms[form]
	if !ok {
		word = w.forms[plural.Other]
	}
	return strconv.FormatInt(minutes, 10) + w.sep + word
}
