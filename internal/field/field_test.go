package field_test

import (
	"errors"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/verifyq/verifyq/internal/field"
)

func TestRename(t *testing.T) {
	t.Parallel()
	other := errors.New("REDIS_URL: not a valid URL")
	err := errors.Join(
		field.Errorf("TTL", "%s is shorter than 1s", "500ms"),
		errors.Join(field.Errorf("Length", "3 is outside 4..10"), other),
		field.Errorf("Unmapped", "kept as it is"),
	)
	got := field.Rename(err, map[string]string{"TTL": "CODE_TTL", "Length": "CODE_LENGTH"})
	require.Error(t, got)
	assert.Equal(t, "CODE_TTL: 500ms is shorter than 1s\nCODE_LENGTH: 3 is outside 4..10\n"+
		"REDIS_URL: not a valid URL\nUnmapped: kept as it is", got.Error())
	assert.ErrorIs(t, got, other)
	var fe *field.Error
	require.ErrorAs(t, got, &fe)
	assert.Equal(t, "CODE_TTL", fe.Field)

	assert.NoError(t, field.Rename(nil, map[string]string{"TTL": "CODE_TTL"}))
	assert.Equal(t, "CODE_TTL: bad", field.Rename(field.Errorf("TTL", "bad"), map[string]string{"TTL": "CODE_TTL"}).Error())
}
