package mail_test

import (
	"fmt"

	"github.com/verifyq/verifyq/mail"
)

func ExampleMaskAddress() {
	fmt.Println(mail.MaskAddress("alice@example.com"))
	fmt.Println(mail.MaskAddress("Alice <alice@example.com>"))
	// Output:
	// a***@example.com
	// ***
}

func ExampleParseLocale() {
	loc, _ := mail.ParseLocale("")
	fmt.Println(loc)
	loc, _ = mail.ParseLocale("EN")
	fmt.Println(loc)
	_, err := mail.ParseLocale("en-GB")
	fmt.Println(err)
	// Output:
	// zh-CN
	// en
	// unknown locale: "en-GB"
}

func ExampleMatchLocale() {
	for _, tag := range []string{"ja", "zh-HK", "en-GB", "pt", "nl", "en_GB!"} {
		loc, err := mail.MatchLocale(tag, mail.LocaleEN)
		fmt.Println(tag, loc, err)
	}
	// Output:
	// ja ja <nil>
	// zh-HK zh-TW <nil>
	// en-GB en <nil>
	// pt pt-BR <nil>
	// nl en <nil>
	// en_GB!  unknown locale: "en_GB!": not a valid BCP 47 language tag
}

func ExampleMatchAcceptLanguage() {
	fmt.Println(mail.MatchAcceptLanguage("zh-HK,zh;q=0.9,en;q=0.8", mail.DefaultLocale))
	fmt.Println(mail.MatchAcceptLanguage("nl, de;q=0.5", mail.DefaultLocale))
	fmt.Println(mail.MatchAcceptLanguage("en;q=x", mail.DefaultLocale))
	// Output:
	// zh-TW
	// de
	// zh-CN
}
