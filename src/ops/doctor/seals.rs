//! The seals' checks: each configured seal reachable, its key usable (a
//! random challenge wrapped and unwrapped), and its permissions no broader
//! than wrap and unwrap where the provider can tell.

use std::time::Instant;

use super::Check;
use crate::{config::ServeConfig, crypto::random, domain::secret::SecretBytes};

/// One check per configured seal, then one per permission verdict.
pub(super) async fn seal_checks(config: &ServeConfig) -> Vec<Check> {
    let mut checks = Vec::new();
    for spec in &config.seals {
        let name = format!("seal {}", spec.id());
        let seal = match spec.open() {
            Ok(seal) => seal,
            Err(err) => {
                checks.push(Check::fail(name, err.to_string(), "fix the --seal value"));
                continue;
            }
        };
        let challenge = SecretBytes::new(random::bytes::<32>().to_vec());
        let started = Instant::now();
        let round_trip = match seal.wrap(&challenge).await {
            Ok(wrapped) => seal.unwrap(&wrapped).await.and_then(|back| {
                if back.expose() == challenge.expose() {
                    Ok(())
                } else {
                    Err(crate::seal::SealError::new(
                        "it unwrapped the challenge to other bytes",
                    ))
                }
            }),
            Err(err) => Err(err),
        };
        let millis = started.elapsed().as_millis();
        match round_trip {
            Ok(()) => checks.push(Check::ok(
                name.clone(),
                format!("wrapped and unwrapped a random challenge in {millis} ms"),
            )),
            Err(err) => {
                checks.push(Check::fail(
                    name,
                    err.to_string(),
                    "make the KMS/HSM reachable and its key usable by keyward (see the README: \
                     Where the master key lives)",
                ));
                continue;
            }
        }
        match seal.permissions().await {
            Ok(Some(note)) => checks.push(Check::ok(format!("{name} permissions"), note)),
            Ok(None) => {}
            Err(err) => checks.push(Check::warn(
                format!("{name} permissions"),
                err.to_string(),
                "grant keyward only encrypt and decrypt with the seal's key",
            )),
        }
    }
    checks
}
