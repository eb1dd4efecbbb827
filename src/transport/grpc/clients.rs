//! `keyward.v1.Clients`: OIDC clients and their secrets.

use tonic::Request;

use super::{
    Api, Reply,
    convert::{client_patch, client_pb, version_u32},
    pb::{self, clients_server::Clients},
};
use crate::{
    Error,
    domain::{access::Method, secret::SecretString},
    service::Target,
};

fn client(id: &str) -> Target {
    Target::Scoped(id.to_string())
}

#[tonic::async_trait]
impl Clients for Api {
    async fn put_client(&self, req: Request<pb::PutClientRequest>) -> Reply<pb::PutClientResponse> {
        let target = |r: &pb::PutClientRequest| client(&r.id);
        self.call(req, Method::PutClient, target, |mut r| async move {
            let patch = client_patch(&mut r);
            let outcome = self.service.put_client(&r.id, patch).await?;
            Ok(pb::PutClientResponse {
                client: Some(client_pb(outcome.client)),
                created: outcome.created,
                generated_secret: outcome
                    .generated_secret
                    .map(|s| s.expose().to_string())
                    .unwrap_or_default(),
            })
        })
        .await
    }

    async fn get_client(&self, req: Request<pb::GetClientRequest>) -> Reply<pb::Client> {
        let target = |r: &pb::GetClientRequest| client(&r.id);
        self.call(req, Method::GetClient, target, |r| async move {
            Ok(client_pb(self.service.get_client(&r.id)?))
        })
        .await
    }

    async fn get_client_secret(
        &self,
        req: Request<pb::GetClientSecretRequest>,
    ) -> Reply<pb::GetClientSecretResponse> {
        let target = |r: &pb::GetClientSecretRequest| client(&r.id);
        self.call(req, Method::GetClientSecret, target, |r| async move {
            if r.version == Some(0) {
                return Err(Error::invalid("version", "versions start at 1"));
            }
            let s = self
                .service
                .get_client_secret(&r.id, r.version.map(i64::from))?;
            Ok(pb::GetClientSecretResponse {
                secret: s.secret.expose().to_string(),
                version: version_u32(s.version),
                valid_until: s.valid_until.unwrap_or(0),
            })
        })
        .await
    }

    async fn list_clients(
        &self,
        req: Request<pb::ListClientsRequest>,
    ) -> Reply<pb::ListClientsResponse> {
        let list = |_, page| async move { self.service.list_clients(&page).await };
        let everything = |_: &pb::ListClientsRequest| Target::None;
        self.list(req, Method::ListClients, everything, list, client_pb)
            .await
    }

    async fn rotate_client_secret(
        &self,
        req: Request<pb::RotateClientSecretRequest>,
    ) -> Reply<pb::RotateClientSecretResponse> {
        let target = |r: &pb::RotateClientSecretRequest| client(&r.id);
        self.call(req, Method::RotateClientSecret, target, |r| async move {
            let secret = r.secret.map(SecretString::new);
            let rotated = self
                .service
                .rotate_client_secret(&r.id, r.grace_seconds, secret)
                .await?;
            Ok(pb::RotateClientSecretResponse {
                version: version_u32(rotated.version),
                generated_secret: rotated
                    .generated_secret
                    .map(|s| s.expose().to_string())
                    .unwrap_or_default(),
                previous_valid_until: rotated.previous_valid_until,
            })
        })
        .await
    }

    async fn delete_client(
        &self,
        req: Request<pb::DeleteClientRequest>,
    ) -> Reply<pb::DeleteClientResponse> {
        let target = |r: &pb::DeleteClientRequest| client(&r.id);
        self.call(req, Method::DeleteClient, target, |r| async move {
            self.service.delete_client(&r.id).await?;
            Ok(pb::DeleteClientResponse {})
        })
        .await
    }

    async fn revoke_client_secret(
        &self,
        req: Request<pb::RevokeClientSecretRequest>,
    ) -> Reply<pb::RevokeClientSecretResponse> {
        let target = |r: &pb::RevokeClientSecretRequest| client(&r.id);
        self.call(req, Method::RevokeClientSecret, target, |r| async move {
            let revoked = self
                .service
                .revoke_client_secret(&r.id, i64::from(r.version))
                .await?;
            Ok(pb::RevokeClientSecretResponse {
                version: version_u32(revoked.version),
                current_version: version_u32(revoked.current_version),
            })
        })
        .await
    }

    async fn verify_client_secret(
        &self,
        req: Request<pb::VerifyClientSecretRequest>,
    ) -> Reply<pb::VerifyClientSecretResponse> {
        let target = |r: &pb::VerifyClientSecretRequest| client(&r.id);
        self.call(req, Method::VerifyClientSecret, target, |r| async move {
            let presented = SecretString::new(r.secret);
            let matched = self.service.verify_client_secret(&r.id, &presented)?;
            Ok(pb::VerifyClientSecretResponse {
                valid: matched.is_some(),
                version: matched.map_or(0, version_u32),
            })
        })
        .await
    }
}
