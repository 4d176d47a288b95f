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
	_, err := mail.ParseLocale("fr")
	fmt.Println(err)
	// Output:
	// zh-CN
	// en
	// unknown locale: "fr"
}
