// Command tessera is the Tessera homeserver.
//
//	tessera                       run with ./tessera.yaml (created if missing)
//	tessera run -config FILE      run with FILE
//	tessera generate-config ...   write a config and a signing key
//	tessera register-user ...     create an account (for operators)
//	tessera backup ...            online copy of the data directory
//	tessera restore ...           put a backup in place
//	tessera db-stats ...          table sizes
//	tessera admin ...             operators' jobs on users and rooms
//	tessera version
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime/debug"
	"syscall"

	"github.com/tessera-hs/tessera/internal/config"
	"github.com/tessera-hs/tessera/internal/server"
	"github.com/tessera-hs/tessera/users"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = ""

// usageError is a mistake in how the command was called or configured:
// exit status 2.
type usageError struct{ err error }

func (u usageError) Error() string { return u.err.Error() }

func main() {
	err := run(os.Args[1:], os.Stdout, os.Stderr)
	if err == nil {
		return
	}
	fmt.Fprintln(os.Stderr, "tessera:", err)
	var ue usageError
	if errors.As(err, &ue) || errors.Is(err, flag.ErrHelp) {
		os.Exit(2)
	}
	os.Exit(1)
}

func run(args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		return runDefault(stdout, stderr)
	}
	switch args[0] {
	case "run":
		return cmdRun(args[1:], stderr)
	case "generate-config":
		return cmdGenerateConfig(args[1:], stdout, stderr)
	case "register-user":
		return cmdRegisterUser(args[1:], stdout, stderr)
	case "backup":
		return cmdBackup(args[1:], stdout, stderr)
	case "restore":
		return cmdRestore(args[1:], stdout, stderr)
	case "db-stats":
		return cmdDBStats(args[1:], stdout, stderr)
	case "admin":
		return cmdAdmin(args[1:], stdout, stderr)
	case "migrate-db":
		return cmdMigrateDB(args[1:], stdout, stderr)
	case "version", "-version", "--version":
		fmt.Fprintln(stdout, "tessera", buildVersion())
		return nil
	case "help", "-h", "-help", "--help":
		fmt.Fprint(stdout, usage)
		return nil
	default:
		return usageError{fmt.Errorf("unknown command %q\n%s", args[0], usage)}
	}
}

const usage = `usage:
  tessera                          run with ./tessera.yaml, creating it if missing
  tessera run -config FILE [-instance NAME]   run the server (NAME: docs/scaling.md)
  tessera generate-config -server-name NAME -data-dir DIR -listen HOST:PORT
                          [-registration-shared-secret S] [-open-registration] -o FILE
  tessera register-user -config FILE -user NAME -password PW [-admin]
  tessera backup -config FILE -o DIR       consistent copy of the data, while the server runs
  tessera restore -config FILE -i DIR [-force]   put a backup in place (server stopped)
  tessera db-stats -config FILE            rows and size of each database table
  tessera admin COMMAND ...        reset-password, make-admin, deactivate, delete-room,
                                   purge-remote-media (tessera admin -h for details)
  tessera migrate-db -from FILE -to DSN     copy a stopped SQLite deployment into an empty PostgreSQL database
  tessera version
`

func buildVersion() string {
	if version != "" {
		return version
	}
	if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
		return bi.Main.Version
	}
	return "dev"
}

func newFlags(name string, stderr io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet("tessera "+name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	return fs
}

func parseFlags(fs *flag.FlagSet, args []string) error {
	if err := fs.Parse(args); err != nil {
		return usageError{err}
	}
	if fs.NArg() > 0 {
		return usageError{fmt.Errorf("unexpected argument %q", fs.Arg(0))}
	}
	return nil
}

func loadConfig(path string) (*config.Config, error) {
	cfg, err := config.Load(path)
	if err != nil {
		return nil, usageError{err}
	}
	return cfg, nil
}

// runDefault runs with ./tessera.yaml, creating it with local defaults the
// first time, so `tessera` alone starts a working server.
func runDefault(stdout, stderr io.Writer) error {
	const path = "tessera.yaml"
	if _, err := os.Stat(path); errors.Is(err, os.ErrNotExist) {
		_, err := config.Generate(config.GenerateOptions{
			ServerName: "localhost", DataDir: "./data", Listen: "127.0.0.1:8008",
		}, path)
		if err != nil {
			return err
		}
		fmt.Fprintf(stderr, "Created %s (server name localhost, data in ./data, listening on 127.0.0.1:8008).\n"+
			"Create a user with: tessera register-user -config %s -user NAME -password PASSWORD\n", path, path)
	}
	return serve(path, "", stderr)
}

func cmdRun(args []string, stderr io.Writer) error {
	fs := newFlags("run", stderr)
	path := fs.String("config", "tessera.yaml", "config file")
	instance := fs.String("instance", "", "this process's name in the config's instances map (docs/scaling.md)")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	return serve(*path, *instance, stderr)
}

// serve runs the server with the config at path; instance, if set, is the
// process's name in the config's instances map.
func serve(path, instance string, stderr io.Writer) error {
	cfg, err := loadConfig(path)
	if err != nil {
		return err
	}
	if instance != "" {
		cfg.Instance = instance
	}
	if err := cfg.CheckInstance(); err != nil {
		return usageError{err}
	}
	cfg.ApplyInstance()
	log := server.NewLogger(cfg.Logging, stderr)
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	return server.Run(ctx, cfg, log)
}

func cmdGenerateConfig(args []string, stdout, stderr io.Writer) error {
	fs := newFlags("generate-config", stderr)
	var opts config.GenerateOptions
	fs.StringVar(&opts.ServerName, "server-name", "localhost", "server name (the part after ':' in user IDs)")
	fs.StringVar(&opts.DataDir, "data-dir", "./data", "data directory (database, signing key, media)")
	fs.StringVar(&opts.Listen, "listen", "127.0.0.1:8008", "HOST:PORT to listen on")
	fs.StringVar(&opts.SharedSecret, "registration-shared-secret", "", "shared secret for admin registration (random if empty)")
	fs.BoolVar(&opts.OpenRegister, "open-registration", false, "let anyone register")
	out := fs.String("o", "", "file to write the config to (required)")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if *out == "" {
		return usageError{errors.New("generate-config: -o FILE is required")}
	}
	if _, err := os.Stat(*out); err == nil {
		return usageError{fmt.Errorf("generate-config: %s already exists; not overwriting it", *out)}
	}
	cfg, err := config.Generate(opts, *out)
	if err != nil {
		return usageError{fmt.Errorf("generate-config: %w", err)}
	}
	fmt.Fprintf(stdout, "Wrote %s (signing key %s)\n", *out, cfg.SigningKeyPath)
	return nil
}

func cmdRegisterUser(args []string, stdout, stderr io.Writer) error {
	fs := newFlags("register-user", stderr)
	path := fs.String("config", "tessera.yaml", "config file")
	user := fs.String("user", "", "localpart of the new user (required)")
	password := fs.String("password", "", "password (required)")
	admin := fs.Bool("admin", false, "make the user a server admin")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if *user == "" || *password == "" {
		return usageError{errors.New("register-user: -user and -password are required")}
	}
	cfg, err := loadConfig(*path)
	if err != nil {
		return err
	}
	ctx := context.Background()
	dbCfg := cfg.Database
	dbCfg.MaxOpenConns = 1
	db, err := server.OpenDatabase(ctx, dbCfg)
	if err != nil {
		return err
	}
	defer db.Close()
	us, err := server.NewUsers(ctx, cfg, db)
	if err != nil {
		return err
	}
	acc, err := us.CreateAccount(ctx, users.NewAccount{Localpart: *user, Password: *password, IsAdmin: *admin})
	if err != nil {
		return fmt.Errorf("register-user: %w", err)
	}
	fmt.Fprintf(stdout, "Created %s%s\n", acc.UserID, map[bool]string{true: " (admin)", false: ""}[*admin])
	return nil
}
