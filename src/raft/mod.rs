//! The Raft consensus core (sans-IO) and its deterministic simulator.
