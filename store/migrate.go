package store

import (
	"context"
	"database/sql"
	"embed"
	"io/fs"

	"github.com/pressly/goose/v3"
	"github.com/pressly/goose/v3/lock"
)

//go:embed migrations/sqlite/*.sql migrations/postgres/*.sql
var migrations embed.FS

// migrationTable is goose's version table. Not goose's default name, so that another goose-managed
// application sharing the schema keeps its own history.
const migrationTable = "sessiond_migrations"

// migrate applies the pending migrations under dir to db. locker, when not nil, is held for the
// whole run so that nodes starting together do not race each other.
func migrate(ctx context.Context, dialect goose.Dialect, db *sql.DB, dir string, locker lock.SessionLocker) error {
	fsys, err := fs.Sub(migrations, dir)
	if err != nil {
		return err
	}
	opts := []goose.ProviderOption{
		goose.WithTableName(migrationTable),
		// Only our embedded files: Go migrations registered globally by some other package
		// must not run against our schema.
		goose.WithDisableGlobalRegistry(true),
		// Progress lines would go to stdout; the caller logs the outcome.
		goose.WithLogger(goose.NopLogger()),
	}
	if locker != nil {
		opts = append(opts, goose.WithSessionLocker(locker))
	}
	p, err := goose.NewProvider(dialect, db, fsys, opts...)
	if err != nil {
		return err
	}
	_, err = p.Up(ctx)
	return err
}
