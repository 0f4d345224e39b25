//! End-to-end tests: real `strata` processes on 127.0.0.1 with ephemeral
//! ports, each test with its own `STRATA_HOME`.
