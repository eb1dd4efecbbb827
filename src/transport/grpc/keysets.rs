//! `keyward.v1.KeySets`: key sets, keys, rotation, signing, OpenMetadata's
//! key export and import, and the JWKS.

use tonic::Request;

use super::{
    Api, Reply,
    convert::{
        algorithm_of, event_pb, export_which, key_pb, keyset_pb, policy_input, profile_of,
        transition_parts,
    },
    pb::{self, key_sets_server::KeySets},
};
use crate::{
    domain::access::Method,
    service::{SignRequest, Target},
};

fn scoped(name: &str) -> Target {
    Target::Scoped(name.to_string())
}

#[tonic::async_trait]
impl KeySets for Api {
    async fn create_key_set(&self, req: Request<pb::CreateKeySetRequest>) -> Reply<pb::KeySet> {
        let target = |r: &pb::CreateKeySetRequest| scoped(&r.name);
        self.call(req, Method::CreateKeySet, target, |r| async move {
            let algorithm = algorithm_of(&r.algorithm)?;
            let bits = (r.rsa_bits != 0).then_some(r.rsa_bits);
            let policy = policy_input(r.policy);
            let info = self
                .service
                .create_keyset(&r.name, algorithm, bits, &policy)
                .await?;
            Ok(keyset_pb(info))
        })
        .await
    }

    async fn update_key_set(&self, req: Request<pb::UpdateKeySetRequest>) -> Reply<pb::KeySet> {
        let target = |r: &pb::UpdateKeySetRequest| scoped(&r.name);
        self.call(req, Method::UpdateKeySet, target, |r| async move {
            let policy = policy_input(r.policy);
            Ok(keyset_pb(
                self.service.update_keyset(&r.name, &policy).await?,
            ))
        })
        .await
    }

    async fn rotate_due(&self, req: Request<pb::RotateDueRequest>) -> Reply<pb::RotateDueResponse> {
        let target = |r: &pb::RotateDueRequest| r.keyset.as_deref().map_or(Target::None, scoped);
        self.call(req, Method::RotateDue, target, |r| async move {
            let events = self
                .service
                .rotate_due(r.keyset.as_deref(), r.dry_run)
                .await?;
            Ok(pb::RotateDueResponse {
                events: events.into_iter().map(event_pb).collect(),
            })
        })
        .await
    }

    async fn revoke_key(&self, req: Request<pb::RevokeKeyRequest>) -> Reply<pb::RevokeKeyResponse> {
        let target = |r: &pb::RevokeKeyRequest| Target::Named(r.kid.clone());
        self.call(req, Method::RevokeKey, target, |r| async move {
            let (events, warnings, keys) = transition_parts(self.service.revoke_key(&r.kid).await?);
            Ok(pb::RevokeKeyResponse {
                events,
                warnings,
                keys,
            })
        })
        .await
    }

    async fn get_key_set(&self, req: Request<pb::GetKeySetRequest>) -> Reply<pb::KeySet> {
        let target = |r: &pb::GetKeySetRequest| scoped(&r.name);
        self.call(req, Method::GetKeySet, target, |r| async move {
            Ok(keyset_pb(self.service.get_keyset(&r.name)?))
        })
        .await
    }

    async fn list_key_sets(
        &self,
        req: Request<pb::ListKeySetsRequest>,
    ) -> Reply<pb::ListKeySetsResponse> {
        let list = |_, page| async move { self.service.list_keysets(&page).await };
        let everything = |_: &pb::ListKeySetsRequest| Target::None;
        self.list(req, Method::ListKeySets, everything, list, keyset_pb)
            .await
    }

    async fn delete_key_set(
        &self,
        req: Request<pb::DeleteKeySetRequest>,
    ) -> Reply<pb::DeleteKeySetResponse> {
        let target = |r: &pb::DeleteKeySetRequest| scoped(&r.name);
        self.call(req, Method::DeleteKeySet, target, |r| async move {
            self.service.delete_keyset(&r.name).await?;
            Ok(pb::DeleteKeySetResponse {})
        })
        .await
    }

    async fn list_keys(&self, req: Request<pb::ListKeysRequest>) -> Reply<pb::ListKeysResponse> {
        let list = |r: pb::ListKeysRequest, page| async move {
            self.service.list_keys(&r.keyset, &page).await
        };
        let keyset = |r: &pb::ListKeysRequest| scoped(&r.keyset);
        self.list(req, Method::ListKeys, keyset, list, key_pb).await
    }

    async fn rotate_key_set(
        &self,
        req: Request<pb::RotateKeySetRequest>,
    ) -> Reply<pb::RotateKeySetResponse> {
        let target = |r: &pb::RotateKeySetRequest| scoped(&r.name);
        self.call(req, Method::RotateKeySet, target, |r| async move {
            let (events, warnings, keys) =
                transition_parts(self.service.rotate_keyset(&r.name).await?);
            Ok(pb::RotateKeySetResponse {
                events,
                warnings,
                keys,
            })
        })
        .await
    }

    async fn sign_jwt(&self, req: Request<pb::SignJwtRequest>) -> Reply<pb::SignJwtResponse> {
        let target = |r: &pb::SignJwtRequest| scoped(&r.keyset);
        self.call(req, Method::SignJwt, target, |r| async move {
            let request = SignRequest {
                profile: profile_of(&r.profile, r.allow_identity_mismatch)?,
                keyset: r.keyset,
                claims_json: r.claims_json,
                ttl_seconds: r.ttl_seconds,
                subject: r.subject,
                email: r.email,
            };
            let signed = self.service.sign_jwt(&request).await?;
            Ok(pb::SignJwtResponse {
                jwt: signed.jwt,
                kid: signed.kid,
                expires_at: signed.expires_at,
            })
        })
        .await
    }

    async fn export_key(&self, req: Request<pb::ExportKeyRequest>) -> Reply<pb::ExportKeyResponse> {
        let target = |r: &pb::ExportKeyRequest| scoped(&r.keyset);
        self.call(req, Method::ExportKey, target, |r| async move {
            let which = export_which(&r.key)?;
            let exported = self.service.export_key(&r.keyset, which).await?;
            Ok(pb::ExportKeyResponse {
                kid: exported.kid,
                algorithm: exported.algorithm,
                private_key_pkcs8_der: exported.private_pkcs8_der.expose().to_vec(),
                public_key_spki_der: exported.public_spki_der,
                state: exported.state.as_str().to_string(),
                issuer: exported.issuer,
                jwks_uri: exported.jwks_uri,
            })
        })
        .await
    }

    async fn import_key(&self, req: Request<pb::ImportKeyRequest>) -> Reply<pb::ImportKeyResponse> {
        let target = |r: &pb::ImportKeyRequest| scoped(&r.keyset);
        self.call(req, Method::ImportKey, target, |r| async move {
            let public = r.public_key.as_deref();
            let imported = self
                .service
                .import_key(&r.keyset, &r.private_key, public, &r.kid)
                .await?;
            Ok(pb::ImportKeyResponse {
                imported: Some(key_pb(imported.key)),
                events: imported.events.into_iter().map(event_pb).collect(),
                keys: imported.keys.into_iter().map(key_pb).collect(),
            })
        })
        .await
    }

    async fn get_jwks(&self, req: Request<pb::GetJwksRequest>) -> Reply<pb::GetJwksResponse> {
        let target = |r: &pb::GetJwksRequest| scoped(&r.keyset);
        self.call(req, Method::GetJwks, target, |r| async move {
            Ok(pb::GetJwksResponse {
                jwks_json: self.service.jwks(&r.keyset)?.body.clone(),
            })
        })
        .await
    }
}
