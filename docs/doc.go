// Package docs holds verifyq's documents beside the README: the API,
// configuration, design, operations and development references. Its only Go
// code is a test: every relative link of the repository's Markdown files
// leads to a file that exists, and every #anchor to a heading of it.
package docs
