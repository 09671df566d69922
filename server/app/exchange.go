package app

import (
	"net/http"

	"github.com/go-chi/chi/v5"

	"github.com/medops/medops/server/tasks"
)

// mountTaskExchange adds the task export and import routes
// (/api/v1/tasks:export, /api/v1/tasks:import) at the root, outside the
// response cache. They are under /api/v1 but not under the tasks prefix,
// so anonymousRead never lets an export through without the token.
func (a *App) mountTaskExchange(root chi.Router) error {
	return tasks.MountExchange(root, TasksPrefix, tasks.Options{
		Store:   untimed(a.store),
		Logger:  a.log,
		OnWrite: func() { a.mods.cache.InvalidatePrefix(TasksPrefix) },
	})
}

// exceptImport applies mw to every request but a task import, whose body
// is a whole store: server.maxBodySize is for single requests.
func exceptImport(mw func(http.Handler) http.Handler) func(http.Handler) http.Handler {
	return func(next http.Handler) http.Handler {
		limited := mw(next)
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if tasks.ExchangeBodyUnlimited(r, TasksPrefix) {
				next.ServeHTTP(w, r)
				return
			}
			limited.ServeHTTP(w, r)
		})
	}
}

// untimed is the store under the timing wrapper, which offers only the
// tasks.Store methods (and the raw reads): the export and import find the
// store's Exporter and Importer by type assertion. They are not timed as
// store operations; the HTTP metrics time them whole.
func untimed(s tasks.Store) tasks.Store {
	switch ts := s.(type) {
	case *timedStore:
		return ts.Store
	case *timedRawStore:
		return ts.Store
	}
	return s
}
