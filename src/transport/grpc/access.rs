//! `keyward.v1.Access`: named API tokens.

use tonic::Request;

use super::{
    Api, Reply,
    convert::token_pb,
    pb::{self, access_server::Access},
};
use crate::{
    domain::access::{Method, Role},
    service::{NewToken, Target},
};

fn token(name: &str) -> Target {
    Target::Named(name.to_string())
}

#[tonic::async_trait]
impl Access for Api {
    async fn create_token(
        &self,
        req: Request<pb::CreateTokenRequest>,
    ) -> Reply<pb::CreateTokenResponse> {
        let target = |r: &pb::CreateTokenRequest| token(&r.name);
        self.call(req, Method::CreateToken, target, |r| async move {
            let new = NewToken {
                role: Some(Role::parse(&r.role)?),
                name: r.name,
                keysets: r.keysets,
                clients: r.clients,
                expires_in: r.expires_in_seconds,
                description: r.description,
            };
            let (info, token) = self.service.create_token(new).await?;
            Ok(pb::CreateTokenResponse {
                info: Some(token_pb(info, self.service.now())),
                token: token.expose().to_string(),
            })
        })
        .await
    }

    async fn get_token(&self, req: Request<pb::GetTokenRequest>) -> Reply<pb::Token> {
        let target = |r: &pb::GetTokenRequest| token(&r.name);
        self.call(req, Method::GetToken, target, |r| async move {
            let info = self.service.get_token(&r.name).await?;
            Ok(token_pb(info, self.service.now()))
        })
        .await
    }

    async fn list_tokens(
        &self,
        req: Request<pb::ListTokensRequest>,
    ) -> Reply<pb::ListTokensResponse> {
        let now = self.service.now();
        let list = |_, page| async move { self.service.list_tokens(&page).await };
        let everything = |_: &pb::ListTokensRequest| Target::None;
        self.list(req, Method::ListTokens, everything, list, |t| {
            token_pb(t, now)
        })
        .await
    }

    async fn revoke_token(&self, req: Request<pb::RevokeTokenRequest>) -> Reply<pb::Token> {
        let target = |r: &pb::RevokeTokenRequest| token(&r.name);
        self.call(req, Method::RevokeToken, target, |r| async move {
            let info = self.service.revoke_token(&r.name).await?;
            Ok(token_pb(info, self.service.now()))
        })
        .await
    }
}
