package config

import (
	"errors"
	"fmt"
	"net/url"
	"sort"
)

// Instance is one process of a deployment that runs several (see
// docs/scaling.md).
type Instance struct {
	// InternalURL is where the other processes reach this one's client
	// listener, for the requests they forward to it.
	InternalURL string `yaml:"internal_url"`
	// Listen, if set, replaces the top-level listen for this process:
	// several processes on one machine need a port each.
	Listen string `yaml:"listen"`
}

// ApplyInstance makes the config this process's: its own listen address,
// if the map gives one. Call it once the process knows its name.
func (c *Config) ApplyInstance() {
	if l := c.Instances[c.Instance].Listen; l != "" {
		c.Listen = l
	}
}

// minInstanceSecret is the shortest instance_secret accepted: it is all
// that stands between the network and a forwarded request.
const minInstanceSecret = 32

// validateInstances checks the instances map. The process's own name may
// still be missing (it usually comes from `tessera run -instance`):
// CheckInstance checks it once it is known.
func (c *Config) validateInstances() error {
	if len(c.Instances) == 0 {
		if c.Instance != "" {
			return fmt.Errorf("instance: %q is set but there is no instances map", c.Instance)
		}
		return nil
	}
	if c.Database.Engine != "postgres" {
		return errors.New("instances: several processes need database.engine postgres (see docs/scaling.md)")
	}
	if len(c.InstanceSecret) < minInstanceSecret {
		return fmt.Errorf("instance_secret: expected at least %d characters, the same on every process", minInstanceSecret)
	}
	names := make([]string, 0, len(c.Instances))
	for name := range c.Instances {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		if name == "" {
			return errors.New("instances: an instance name must not be empty")
		}
		u, err := url.Parse(c.Instances[name].InternalURL)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return fmt.Errorf("instances.%s.internal_url: expected an http(s) URL, got %q", name, c.Instances[name].InternalURL)
		}
	}
	if c.Instance != "" {
		return c.CheckInstance()
	}
	return nil
}

// CheckInstance checks, once the process knows its name, that a process of
// a several-process deployment has one, and that it is in the map.
func (c *Config) CheckInstance() error {
	if len(c.Instances) == 0 {
		return nil
	}
	if c.Instance == "" {
		return errors.New("instance: this deployment has an instances map: start each process with -instance NAME")
	}
	if _, ok := c.Instances[c.Instance]; !ok {
		return fmt.Errorf("instance: %q is not in the instances map", c.Instance)
	}
	return nil
}
