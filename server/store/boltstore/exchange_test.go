package boltstore

import (
	"testing"

	"github.com/medops/medops/server/store/storetest"
	"github.com/medops/medops/server/tasks"
)

func TestExchangeConformance(t *testing.T) {
	storetest.RunExchange(t, func(t *testing.T) tasks.Store { return openTest(t) })
}
