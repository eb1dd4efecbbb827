//! `keyward.v1.Audit`: listing and verifying the audit log.

use tonic::Request;

use super::{
    Api, Reply,
    convert::{audit_event_pb, audit_filter},
    pb::{self, audit_server::Audit},
};
use crate::{domain::access::Method, service::Target};

#[tonic::async_trait]
impl Audit for Api {
    async fn list_audit_events(
        &self,
        req: Request<pb::ListAuditEventsRequest>,
    ) -> Reply<pb::ListAuditEventsResponse> {
        let list = |mut r: pb::ListAuditEventsRequest, page| async move {
            self.service.audit_events(audit_filter(&mut r), &page).await
        };
        let everything = |_: &pb::ListAuditEventsRequest| Target::None;
        self.list(
            req,
            Method::ListAuditEvents,
            everything,
            list,
            audit_event_pb,
        )
        .await
    }

    async fn verify_audit_chain(
        &self,
        req: Request<pb::VerifyAuditChainRequest>,
    ) -> Reply<pb::VerifyAuditChainResponse> {
        let target = |_: &pb::VerifyAuditChainRequest| Target::None;
        self.call(req, Method::VerifyAuditChain, target, |_| async move {
            let report = self.service.verify_audit().await?;
            let (broken_id, problem) = report
                .broken
                .map_or((0, String::new()), |b| (b.id, b.problem));
            Ok(pb::VerifyAuditChainResponse {
                intact: broken_id == 0,
                checked: report.checked,
                first_id: report.first_id,
                last_id: report.last_id,
                broken_id,
                problem,
            })
        })
        .await
    }
}
