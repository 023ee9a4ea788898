//! The reference model: plain maps and the rules of `docs/rules.md`, written independently
//! of the service and of `tenantry_core::decide`.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt::Debug;

use tenantry_core::Error as CoreError;
use tenantry_core::{Field, Value};
use tenantry_service::{
    Action, ActorRef, AuditAction, AuditTarget, BulkInvite, BulkItem, BulkOutcome, Category,
    Decision, Email, InviteRequest, Permission, Permissions, QueryError, Reason, Request, Role,
    RoleTemplate, Rule, SeatUsage, SortBy, Status, TemplateDeletion, TemplateEdit, TemplateId,
    TemplateName, TenantId, Tombstone, User, UserEdit, UserId, UserQuery,
};
use time::OffsetDateTime;

use super::strategies::{Tpl, Who};
use super::{
    MAX_ATTEMPTS, RESEND_LIMIT, RESEND_WINDOW, TTL, change_of, check_name, crm_now, ghost_template,
    ghost_user, is_admin, key_of, not_allowed, note, user_fields,
};

// ------------------------------------------------------------------------------ the model

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum TokState {
    Pending,
    Used,
    Revoked,
}

#[derive(Debug, Clone)]
pub(super) struct MToken {
    pub(super) text: String,
    pub(super) t: usize,
    pub(super) user: UserId,
    pub(super) expires_at: OffsetDateTime,
    pub(super) state: TokState,
    /// [accept attempts (D24)](tenantry_core::Rule::AcceptAttempts): sign-ups tried on it with a wrong address.
    pub(super) failed: u32,
}

/// An audit event as the model predicts it ([audit log (D13)](tenantry_core::Rule::AuditLog)).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct ExpEvent {
    pub(super) actor: ActorRef,
    pub(super) action: AuditAction,
    pub(super) target: AuditTarget,
    pub(super) refused: Option<Rule>,
    /// For user and template edits: the fields that changed (permission sets with their
    /// before/after values).
    pub(super) detail: Vec<String>,
}

#[derive(Debug)]
pub(super) struct MTenant {
    id: TenantId,
    pub(super) limit: Option<u32>,
    pub(super) users: BTreeMap<UserId, User>,
    pub(super) ever: Vec<UserId>,
    resends: HashMap<UserId, Vec<OffsetDateTime>>,
    pub(super) templates: BTreeMap<TemplateId, RoleTemplate>,
    pub(super) ever_templates: Vec<TemplateId>,
    pub(super) tombstones: HashMap<UserId, Tombstone>,
}

/// The reference model: plain maps and the rules of `docs/rules.md`.
#[derive(Debug)]
pub(super) struct Model {
    pub(super) now: OffsetDateTime,
    pub(super) t: Vec<MTenant>,
    pub(super) tokens: Vec<MToken>,
    /// Audit events the current step should append, per tenant.
    pub(super) audit: [Vec<ExpEvent>; 2],
    /// Invitation mail the current call should send: (tenant, user).
    pub(super) mail: Vec<(usize, UserId)>,
    /// [audit log (D13)](tenantry_core::Rule::AuditLog), refusals of non-users, per tenant: when the last one was
    /// recorded, and how many were only counted since.
    pub(super) foreign: HashMap<usize, (OffsetDateTime, u64)>,
}

#[derive(Debug)]
pub(super) enum ListErr {
    Rule(CoreError),
    Query(QueryError),
}

impl Model {
    pub(super) fn user(&self, t: usize, id: UserId) -> Option<&User> {
        self.t[t].users.get(&id)
    }

    fn template_perms(&self, t: usize, u: &User) -> Permissions {
        u.template_id
            .and_then(|id| self.t[t].templates.get(&id))
            .map_or(Permissions::empty(), |x| x.permissions)
    }

    /// [roles (D1)](tenantry_core::Rule::Roles), [current access (D6)](tenantry_core::Rule::CurrentAccess): what the user would hold if active.
    fn potential(&self, t: usize, u: &User) -> Permissions {
        match u.role {
            Role::Admin => Permissions::all(),
            Role::User => u.grants | self.template_perms(t, u),
        }
    }

    /// [current access (D6)](tenantry_core::Rule::CurrentAccess): what the user holds now.
    pub(super) fn holds(&self, t: usize, u: &User) -> Permissions {
        if u.status == Status::Active {
            self.potential(t, u)
        } else {
            Permissions::empty()
        }
    }

    fn active_admins(&self, t: usize) -> usize {
        self.t[t].users.values().filter(|u| is_admin(u)).count()
    }

    pub(super) fn seats(&self, t: usize) -> SeatUsage {
        let used = u32::try_from(self.t[t].users.len()).unwrap();
        let limit = self.t[t].limit;
        SeatUsage {
            used,
            limit,
            remaining: limit.map(|l| l.saturating_sub(used)),
            at_limit: limit.is_some_and(|l| used >= l),
        }
    }

    /// [management authority (D7)](tenantry_core::Rule::ManagementAuthority): the operation needs `users:<action>`.
    fn need(&self, t: usize, actor: &User, action: Action) -> Result<(), CoreError> {
        if self
            .holds(t, actor)
            .contains(Permission::new(Category::Users, action).flag())
        {
            Ok(())
        } else {
            Err(not_allowed(action))
        }
    }

    /// [management authority (D7)](tenantry_core::Rule::ManagementAuthority): no granting what the actor does not hold itself.
    fn check_gain(
        &self,
        t: usize,
        actor: &User,
        gained: Permissions,
        crm_gained: bool,
    ) -> Result<(), CoreError> {
        let missing = gained - self.holds(t, actor);
        let crm = crm_gained && !crm_now(actor);
        if missing.is_empty() && !crm {
            Ok(())
        } else {
            Err(CoreError::Escalation { missing, crm })
        }
    }

    fn success(&mut self, t: usize, actor: ActorRef, action: AuditAction, target: AuditTarget) {
        self.detailed(t, actor, action, target, Vec::new());
    }

    fn detailed(
        &mut self,
        t: usize,
        actor: ActorRef,
        action: AuditAction,
        target: AuditTarget,
        detail: Vec<String>,
    ) {
        self.audit[t].push(ExpEvent {
            actor,
            action,
            target,
            refused: None,
            detail,
        });
    }

    /// [audit log (D13)](tenantry_core::Rule::AuditLog): a refused attempt by an actor of the tenant is audited.
    fn refuse(
        &mut self,
        t: usize,
        actor: UserId,
        action: AuditAction,
        target: AuditTarget,
        e: &CoreError,
    ) {
        self.refuse_with(t, actor, action, target, e, Vec::new());
    }

    /// As `refuse`, recording what the attempt tried (`detail`, rendered by `change_of`).
    fn refuse_with(
        &mut self,
        t: usize,
        actor: UserId,
        action: AuditAction,
        target: AuditTarget,
        e: &CoreError,
        detail: Vec<String>,
    ) {
        if self.t[t].users.contains_key(&actor) {
            self.audit[t].push(ExpEvent {
                actor: ActorRef::User(actor),
                action,
                target,
                refused: Some(e.rule()),
                detail,
            });
        }
    }

    /// [audit log (D13)](tenantry_core::Rule::AuditLog): `actor` is not a user of tenant `t`: refused for management authority
    /// (whatever else the attempt named), recorded against the tenant at most once a minute
    /// per tenant, with the count of the ones in between.
    fn refuse_foreign(
        &mut self,
        t: usize,
        actor: UserId,
        action: AuditAction,
        needed: Action,
    ) -> CoreError {
        let now = self.now;
        let unrecorded = match self.foreign.get_mut(&t) {
            Some((at, n)) if now >= *at && now - *at < time::Duration::minutes(1) => {
                *n += 1;
                return not_allowed(needed);
            }
            Some(entry) => std::mem::replace(entry, (now, 0)).1,
            None => {
                self.foreign.insert(t, (now, 0));
                0
            }
        };
        self.audit[t].push(ExpEvent {
            actor: ActorRef::User(actor),
            action,
            target: AuditTarget::Tenant,
            refused: Some(Rule::ManagementAuthority),
            detail: vec![change_of(
                Field::UnrecordedRefusals,
                Value::None,
                Value::Number(unrecorded),
            )],
        });
        not_allowed(needed)
    }

    /// [within own access (D21)](tenantry_core::Rule::WithinOwnAccess): a non-admin manages only users whose access — what they hold now and what they
    /// would hold once active, CRM included — is within its own; the refusal names the
    /// excess. Admins are not limited.
    fn check_within(&self, t: usize, actor: &User, target: &User) -> Result<(), CoreError> {
        if is_admin(actor) {
            return Ok(());
        }
        let missing = (self.potential(t, target) | self.holds(t, target)) - self.holds(t, actor);
        let crm = (target.crm_access || target.role == Role::Admin) && !crm_now(actor);
        if missing.is_empty() && !crm {
            Ok(())
        } else {
            Err(CoreError::BeyondOwnAccess { missing, crm })
        }
    }

    /// [within own access (D21)](tenantry_core::Rule::WithinOwnAccess) for the users of template `id` (a non-admin changing their template's
    /// permissions, or detaching or reassigning them): the refusal names everything any of
    /// them holds beyond the actor.
    fn check_all_within(&self, t: usize, actor: &User, id: TemplateId) -> Result<(), CoreError> {
        let (mut missing, mut crm) = (Permissions::empty(), false);
        for u in self.t[t]
            .users
            .values()
            .filter(|u| u.template_id == Some(id))
        {
            if let Err(CoreError::BeyondOwnAccess { missing: m, crm: c }) =
                self.check_within(t, actor, u)
            {
                missing |= m;
                crm |= c;
            }
        }
        if missing.is_empty() && !crm {
            Ok(())
        } else {
            Err(CoreError::BeyondOwnAccess { missing, crm })
        }
    }

    /// [audit log (D13)](tenantry_core::Rule::AuditLog) (template edits and deletions): the users referencing template `from` whose
    /// access, now or once active, differs when it gives `to` instead of `from`'s
    /// permissions; admins hold everything either way.
    fn changed_users(
        &self,
        t: usize,
        from: TemplateId,
        before: Permissions,
        to: Permissions,
    ) -> Vec<String> {
        let ids: Vec<UserId> = self.t[t]
            .users
            .values()
            .filter(|u| {
                u.template_id == Some(from)
                    && u.role == Role::User
                    && (u.grants | before) != (u.grants | to)
            })
            .map(|u| u.id)
            .collect();
        if ids.is_empty() {
            // Choice: no entry when nobody's access changed.
            Vec::new()
        } else {
            vec![change_of(
                Field::ChangedUsers,
                Value::None,
                Value::Users(ids),
            )]
        }
    }

    /// [invitations (D10)](tenantry_core::Rule::Invitations): every pending token of the user dies.
    fn revoke(&mut self, user: UserId) {
        for tok in &mut self.tokens {
            if tok.user == user && tok.state == TokState::Pending {
                tok.state = TokState::Revoked;
            }
        }
    }

    pub(super) fn who(&self, t: usize, who: Who) -> UserId {
        let pick = |list: &Vec<UserId>, i: usize| list[i % list.len()];
        match who {
            Who::First => self.t[t].ever[0],
            Who::Last => *self.t[t].ever.last().unwrap(),
            Who::Slot(i) => pick(&self.t[t].ever, i),
            Who::Other(i) => pick(&self.t[1 - t].ever, i),
            Who::Active(i) => {
                self.pick_user(t, i, |u| u.status == Status::Active && u.role == Role::User)
            }
            Who::Manager(action, i) => {
                let managers = self.pick_user(t, i, |u| {
                    u.role == Role::User && self.need(t, u, action).is_ok()
                });
                if managers == self.t[t].ever[0] {
                    self.who(t, Who::Active(i))
                } else {
                    managers
                }
            }
            Who::Inactive(i) => self.pick_user(t, i, |u| u.status != Status::Active),
            Who::Suspended(i) => self.pick_user(t, i, |u| u.status == Status::Suspended),
            Who::Ghost => ghost_user(),
        }
    }

    /// The `i`-th (cyclically) user of the tenant that passes `filter`, else the first admin.
    fn pick_user(&self, t: usize, i: usize, filter: impl Fn(&User) -> bool) -> UserId {
        let ids: Vec<UserId> = self.t[t]
            .ever
            .iter()
            .copied()
            .filter(|id| self.user(t, *id).is_some_and(&filter))
            .collect();
        if ids.is_empty() {
            self.t[t].ever[0]
        } else {
            ids[i % ids.len()]
        }
    }

    pub(super) fn tpl(&self, t: usize, tpl: Tpl) -> TemplateId {
        let pick = |list: &Vec<TemplateId>, i: usize| {
            if list.is_empty() {
                ghost_template()
            } else {
                list[i % list.len()]
            }
        };
        match tpl {
            Tpl::Live(i) => pick(&self.t[t].templates.keys().copied().collect(), i),
            Tpl::Slot(i) => pick(&self.t[t].ever_templates, i),
            Tpl::Last => pick(
                &self.t[t].ever_templates,
                self.t[t].ever_templates.len().saturating_sub(1),
            ),
            Tpl::Other(i) => pick(&self.t[1 - t].ever_templates, i),
            Tpl::Ghost => ghost_template(),
        }
    }

    pub(super) fn known(&self, id: UserId) -> bool {
        self.t.iter().any(|t| t.ever.contains(&id))
    }

    // -------------------------------------------------------------------------- use cases

    pub(super) fn add_tenant(
        &mut self,
        id: TenantId,
        limit: Option<u32>,
        admin: UserId,
        email: Email,
    ) {
        let user = User {
            id: admin,
            tenant_id: id,
            email,
            role: Role::Admin,
            status: Status::Active,
            template_id: None,
            crm_access: true,
            grants: Permissions::empty(),
            created_at: self.now,
            last_login: None,
            invite_expires_at: None,
            identity: None,
        };
        self.t.push(MTenant {
            id,
            limit,
            users: BTreeMap::from([(admin, user)]),
            ever: vec![admin],
            resends: HashMap::new(),
            templates: BTreeMap::new(),
            ever_templates: Vec::new(),
            tombstones: HashMap::new(),
        });
        let t = self.t.len() - 1;
        self.success(
            t,
            ActorRef::System,
            AuditAction::TenantCreated,
            AuditTarget::Tenant,
        );
        self.success(
            t,
            ActorRef::System,
            AuditAction::UserInvited,
            AuditTarget::User(admin),
        );
    }

    /// [seat limit (D9)](tenantry_core::Rule::SeatLimit): the billing side sets the limit; it may go below usage.
    pub(super) fn set_limit(&mut self, t: usize, limit: Option<u32>) -> SeatUsage {
        if self.t[t].limit != limit {
            self.t[t].limit = limit;
            self.success(
                t,
                ActorRef::System,
                AuditAction::UserLimitChanged,
                AuditTarget::Tenant,
            );
        }
        self.seats(t)
    }

    /// [management authority (D7)](tenantry_core::Rule::ManagementAuthority) checks of an invite that do not depend on the address.
    fn invite_authority(
        &self,
        t: usize,
        a: &User,
        role: Role,
        template: Option<TemplateId>,
        crm: bool,
        grants: Permissions,
    ) -> Result<(), CoreError> {
        self.need(t, a, Action::Create)?;
        if role == Role::Admin && !is_admin(a) {
            return Err(CoreError::AdminOnly);
        }
        let tpl_perms = match template {
            None => Permissions::empty(),
            Some(id) => match self.t[t].templates.get(&id) {
                Some(x) => x.permissions,
                None => return Err(CoreError::TemplateNotFound),
            },
        };
        let potential = match role {
            Role::Admin => Permissions::all(),
            Role::User => grants | tpl_perms,
        };
        self.check_gain(t, a, potential, crm || role == Role::Admin)
    }

    fn taken(&self, t: usize, key: &str, except: Option<UserId>) -> bool {
        self.t[t]
            .users
            .values()
            .any(|u| Some(u.id) != except && key_of(u.email.as_str()) == key)
    }

    /// Adds an invited user ([seat limit (D9)](tenantry_core::Rule::SeatLimit) checked by the caller) and expects its mail.
    #[allow(clippy::too_many_arguments)]
    fn add_invited(
        &mut self,
        t: usize,
        actor: UserId,
        id: UserId,
        email: Email,
        role: Role,
        template: Option<TemplateId>,
        crm: bool,
        grants: Permissions,
    ) -> User {
        let user = User {
            id,
            tenant_id: self.t[t].id,
            email,
            role,
            status: Status::Invited,
            template_id: template,
            // D5: admins always have CRM access.
            crm_access: crm || role == Role::Admin,
            // Choice: an admin's direct grants are stored empty (D1 makes them moot).
            grants: if role == Role::Admin {
                Permissions::empty()
            } else {
                grants
            },
            created_at: self.now,
            last_login: None,
            invite_expires_at: Some(self.now + TTL),
            identity: None,
        };
        self.t[t].users.insert(id, user.clone());
        self.t[t].ever.push(id);
        self.mail.push((t, id));
        self.success(
            t,
            ActorRef::User(actor),
            AuditAction::UserInvited,
            AuditTarget::User(id),
        );
        user
    }

    fn seat_free(&self, t: usize) -> Result<(), CoreError> {
        let used = u32::try_from(self.t[t].users.len()).unwrap();
        match self.t[t].limit {
            Some(limit) if used >= limit => Err(CoreError::SeatLimitReached { used, limit }),
            _ => Ok(()),
        }
    }

    pub(super) fn invite(
        &mut self,
        t: usize,
        actor: UserId,
        req: &InviteRequest,
        new_id: Option<UserId>,
    ) -> Result<User, CoreError> {
        let Some(a) = self.user(t, actor).cloned() else {
            return Err(self.refuse_foreign(t, actor, AuditAction::UserInvited, Action::Create));
        };
        let decided = self
            .invite_authority(t, &a, req.role, req.template_id, req.crm_access, req.grants)
            .and_then(|()| {
                if self.taken(t, &key_of(req.email.as_str()), None) {
                    return Err(CoreError::EmailTaken {
                        email: req.email.as_str().to_owned(),
                    });
                }
                self.seat_free(t)
            });
        if let Err(e) = decided {
            // D13: the refusal records the address that was tried.
            let tried = vec![change_of(
                Field::Email,
                Value::None,
                Value::Text(req.email.as_str().to_owned()),
            )];
            self.refuse_with(
                t,
                actor,
                AuditAction::UserInvited,
                AuditTarget::Tenant,
                &e,
                tried,
            );
            return Err(e);
        }
        Ok(self.add_invited(
            t,
            actor,
            new_id.unwrap_or_else(ghost_user),
            req.email.clone(),
            req.role,
            req.template_id,
            req.crm_access,
            req.grants,
        ))
    }

    /// [bulk invite (D19)](tenantry_core::Rule::BulkInvite): `ids[i]` is the id the service gave item `i`, if it invited it.
    pub(super) fn invite_many(
        &mut self,
        t: usize,
        actor: UserId,
        req: &BulkInvite,
        ids: &[Option<UserId>],
    ) -> Result<Vec<BulkItem>, CoreError> {
        let Some(a) = self.user(t, actor).cloned() else {
            return Err(self.refuse_foreign(t, actor, AuditAction::UserInvited, Action::Create));
        };
        let role = req.role.unwrap_or(Role::User);
        if let Err(e) =
            self.invite_authority(t, &a, role, req.template_id, req.crm_access, req.grants)
        {
            self.refuse(t, actor, AuditAction::UserInvited, AuditTarget::Tenant, &e);
            return Err(e);
        }
        let mut seen = HashSet::new();
        let mut items = Vec::new();
        for (i, input) in req.emails.iter().enumerate() {
            let outcome = match Email::parse(input) {
                Err(reason) => BulkOutcome::Invalid { reason },
                Ok(email) => {
                    let key = key_of(input);
                    // Only addresses this call invited count as seen (D19): a repeat of
                    // one refused for the limit is refused for the limit again.
                    if self.taken(t, &key, None) || seen.contains(&key) {
                        BulkOutcome::Duplicate
                    } else {
                        match self.seat_free(t) {
                            Err(CoreError::SeatLimitReached { used, limit }) => {
                                BulkOutcome::LimitReached { used, limit }
                            }
                            _ => {
                                seen.insert(key);
                                let id = ids.get(i).copied().flatten().unwrap_or_else(ghost_user);
                                self.add_invited(
                                    t,
                                    actor,
                                    id,
                                    email,
                                    role,
                                    req.template_id,
                                    req.crm_access,
                                    req.grants,
                                );
                                BulkOutcome::Invited { user_id: id }
                            }
                        }
                    }
                }
            };
            items.push(BulkItem {
                input: input.clone(),
                outcome,
            });
        }
        Ok(items)
    }

    pub(super) fn resend(
        &mut self,
        t: usize,
        actor: UserId,
        target: UserId,
    ) -> Result<(), CoreError> {
        let Some(a) = self.user(t, actor).cloned() else {
            return Err(self.refuse_foreign(
                t,
                actor,
                AuditAction::InvitationResent,
                Action::Create,
            ));
        };
        let decided = (|| {
            // D7 before D15: an actor without the permission learns nothing about ids.
            self.need(t, &a, Action::Create)?;
            let Some(u) = self.user(t, target) else {
                return Err(CoreError::UserNotFound);
            };
            if u.role == Role::Admin && !is_admin(&a) {
                return Err(CoreError::AdminOnly);
            }
            // D21. Choice: before D10's own checks.
            self.check_within(t, &a, u)?;
            if u.status != Status::Invited {
                return Err(CoreError::NotInvited { status: u.status });
            }
            let since = self.now - RESEND_WINDOW;
            let mut recent: Vec<OffsetDateTime> = self.t[t]
                .resends
                .get(&target)
                .map(|v| v.iter().copied().filter(|r| *r > since).collect())
                .unwrap_or_default();
            recent.sort();
            if recent.len() >= RESEND_LIMIT {
                return Err(CoreError::ResendRateLimited {
                    retry_at: recent[recent.len() - RESEND_LIMIT] + RESEND_WINDOW,
                });
            }
            Ok(())
        })();
        if let Err(e) = decided {
            self.refuse(
                t,
                actor,
                AuditAction::InvitationResent,
                AuditTarget::User(target),
                &e,
            );
            return Err(e);
        }
        self.revoke(target);
        self.t[t].resends.entry(target).or_default().push(self.now);
        let now = self.now;
        if let Some(u) = self.t[t].users.get_mut(&target) {
            u.invite_expires_at = Some(now + TTL);
        }
        self.mail.push((t, target));
        self.success(
            t,
            ActorRef::User(actor),
            AuditAction::InvitationResent,
            AuditTarget::User(target),
        );
        Ok(())
    }

    /// [invitations (D10)](tenantry_core::Rule::Invitations), [accept attempts (D24)](tenantry_core::Rule::AcceptAttempts). A wrong address on a live token is a failed attempt, counted (and audited
    /// as a refusal by the host) even though the call fails; the fifth kills the token.
    pub(super) fn accept(&mut self, token: &str, signup: &str) -> Result<User, CoreError> {
        let signup_key = match Email::parse(signup) {
            Ok(_) => key_of(signup),
            Err(e) => return Err(CoreError::InvalidEmail(e)),
        };
        let Some(ti) = self.tokens.iter().position(|x| x.text == token) else {
            return Err(CoreError::InvalidInvitation);
        };
        let tok = self.tokens[ti].clone();
        if tok.state == TokState::Pending && self.now == tok.expires_at {
            // D10: exactly at the expiry the token is already refused (coverage statistic).
            note("~boundary accept_invitation at the exact expiry".to_owned());
        }
        if tok.state != TokState::Pending
            || self.now >= tok.expires_at
            || tok.failed >= MAX_ATTEMPTS
        {
            return Err(CoreError::InvalidInvitation);
        }
        let Some(u) = self.user(tok.t, tok.user).cloned() else {
            return Err(CoreError::InvalidInvitation);
        };
        if u.status != Status::Invited {
            return Err(CoreError::InvalidInvitation);
        }
        if key_of(u.email.as_str()) != signup_key {
            let failed = tok.failed + 1;
            self.tokens[ti].failed = failed;
            // Choice (the service's rendering): the count, and the token's end.
            let mut detail = vec![change_of(
                Field::FailedAttempts,
                Value::Number(u64::from(tok.failed)),
                Value::Number(u64::from(failed)),
            )];
            if failed >= MAX_ATTEMPTS {
                self.tokens[ti].state = TokState::Revoked;
                detail.push(change_of(
                    Field::InvitationState,
                    Value::Text("pending".to_owned()),
                    Value::Text("revoked".to_owned()),
                ));
                note(
                    "~boundary accept_invitation: the fifth wrong address kills the token"
                        .to_owned(),
                );
            }
            self.audit[tok.t].push(ExpEvent {
                actor: ActorRef::System,
                action: AuditAction::AcceptAttemptFailed,
                target: AuditTarget::User(u.id),
                refused: Some(Rule::AcceptAttempts),
                detail,
            });
            return Err(CoreError::InvitationEmailMismatch {
                attempts_left: MAX_ATTEMPTS - failed,
            });
        }
        self.revoke(u.id);
        self.tokens[ti].state = TokState::Used;
        let accepted = User {
            status: Status::Active,
            last_login: Some(self.now),
            invite_expires_at: None,
            ..u
        };
        self.t[tok.t].users.insert(accepted.id, accepted.clone());
        self.success(
            tok.t,
            ActorRef::User(accepted.id),
            AuditAction::InvitationAccepted,
            AuditTarget::User(accepted.id),
        );
        Ok(accepted)
    }

    pub(super) fn sign_in(&mut self, t: usize, id: UserId) -> Result<User, CoreError> {
        let Some(u) = self.user(t, id).cloned() else {
            return Err(CoreError::UserNotFound);
        };
        if u.status != Status::Active {
            return Err(CoreError::SignInRefused { status: u.status });
        }
        let u = User {
            last_login: Some(self.now),
            ..u
        };
        self.t[t].users.insert(id, u.clone());
        self.success(
            t,
            ActorRef::User(id),
            AuditAction::SignedIn,
            AuditTarget::User(id),
        );
        Ok(u)
    }

    fn edit_decide(
        &self,
        t: usize,
        a: &User,
        target: UserId,
        e: &UserEdit,
    ) -> Result<(User, User), CoreError> {
        // D7 before D15: an actor without the permission learns nothing about ids.
        self.need(t, a, Action::Edit)?;
        let Some(before) = self.user(t, target).cloned() else {
            return Err(CoreError::UserNotFound);
        };
        let mut after = before.clone();
        if let Some(email) = &e.email {
            after.email = email.clone();
        }
        if let Some(role) = e.role {
            after.role = role;
        }
        if let Some(to) = e.status {
            // D2: an edit only moves active <-> suspended (or leaves the status alone).
            let ok = to == before.status
                || matches!(
                    (before.status, to),
                    (Status::Active, Status::Suspended) | (Status::Suspended, Status::Active)
                );
            if !ok {
                return Err(CoreError::InvalidTransition {
                    from: before.status,
                    to,
                });
            }
            after.status = to;
        }
        if let Some(tpl) = e.template_id {
            after.template_id = tpl;
        }
        if let Some(id) = after.template_id
            && !self.t[t].templates.contains_key(&id)
        {
            return Err(CoreError::TemplateNotFound);
        }
        if let Some(g) = e.grants {
            after.grants = g;
        }
        if let Some(crm) = e.crm_access {
            // D5: an admin's CRM access cannot be turned off.
            if !crm && after.role == Role::Admin {
                return Err(CoreError::AdminCrmRequired);
            }
            after.crm_access = crm;
        }
        if after.role == Role::Admin {
            // D5: promoting turns CRM access on; demoting keeps it.
            after.crm_access = true;
        }
        if !is_admin(a) {
            // D7: a non-admin may not edit or create an admin, nor change its own access.
            if before.role == Role::Admin || after.role == Role::Admin {
                return Err(CoreError::AdminOnly);
            }
            let access_changed = before.role != after.role
                || before.status != after.status
                || before.template_id != after.template_id
                || before.grants != after.grants
                || before.crm_access != after.crm_access;
            if before.id == a.id && access_changed {
                return Err(CoreError::SelfChange);
            }
            // D21: whatever the edit (the address alone too), only within the actor's own
            // access. Choice: after the admin and self-change checks.
            self.check_within(t, a, &before)?;
        }
        // D7: what the target may hold (now, or once reactivated) must not grow beyond
        // what the actor holds.
        let gained = (self.potential(t, &after) - self.potential(t, &before))
            | (self.holds(t, &after) - self.holds(t, &before));
        let crm_gained =
            (after.crm_access && !before.crm_access) || (crm_now(&after) && !crm_now(&before));
        self.check_gain(t, a, gained, crm_gained)?;
        // D8.
        if is_admin(&before) && !is_admin(&after) && self.active_admins(t) <= 1 {
            return Err(CoreError::LastAdmin);
        }
        // D3.
        let key = key_of(after.email.as_str());
        if key != key_of(before.email.as_str()) && self.taken(t, &key, Some(before.id)) {
            return Err(CoreError::EmailTaken {
                email: after.email.as_str().to_owned(),
            });
        }
        Ok((before, after))
    }

    pub(super) fn edit(
        &mut self,
        t: usize,
        actor: UserId,
        target: UserId,
        e: &UserEdit,
    ) -> Result<User, CoreError> {
        let Some(a) = self.user(t, actor).cloned() else {
            return Err(self.refuse_foreign(t, actor, AuditAction::UserEdited, Action::Edit));
        };
        let (before, mut after) = match self.edit_decide(t, &a, target, e) {
            Ok(v) => v,
            Err(err) => {
                self.refuse(
                    t,
                    actor,
                    AuditAction::UserEdited,
                    AuditTarget::User(target),
                    &err,
                );
                return Err(err);
            }
        };
        let detail = user_fields(&before, &after);
        if detail.is_empty() {
            return Ok(before);
        }
        if key_of(before.email.as_str()) != key_of(after.email.as_str())
            && before.status == Status::Invited
        {
            // D10: a new address invalidates the tokens; the user stays invited without a
            // usable link (not an expired invitation, D20) until the invitation is resent.
            self.revoke(target);
            after.invite_expires_at = None;
        }
        self.t[t].users.insert(target, after.clone());
        self.detailed(
            t,
            ActorRef::User(actor),
            AuditAction::UserEdited,
            AuditTarget::User(target),
            detail,
        );
        Ok(after)
    }

    /// [permanent delete (D11)](tenantry_core::Rule::PermanentDelete): the row goes, its tokens die, its seat is freed, a tombstone remains.
    fn remove(&mut self, t: usize, id: UserId, by: UserId) -> Tombstone {
        let u = self.t[t].users.remove(&id).unwrap();
        self.revoke(id);
        let tomb = Tombstone {
            user_id: id,
            tenant_id: self.t[t].id,
            email: u.email,
            deleted_at: self.now,
            deleted_by: ActorRef::User(by),
        };
        self.t[t].tombstones.insert(id, tomb.clone());
        self.success(
            t,
            ActorRef::User(by),
            AuditAction::UserDeleted,
            AuditTarget::User(id),
        );
        tomb
    }

    pub(super) fn delete(
        &mut self,
        t: usize,
        actor: UserId,
        target: UserId,
    ) -> Result<Tombstone, CoreError> {
        let Some(a) = self.user(t, actor).cloned() else {
            return Err(self.refuse_foreign(t, actor, AuditAction::UserDeleted, Action::Delete));
        };
        let decided = (|| {
            self.need(t, &a, Action::Delete)?;
            let Some(u) = self.user(t, target) else {
                return Err(CoreError::UserNotFound);
            };
            if u.role == Role::Admin && !is_admin(&a) {
                return Err(CoreError::AdminOnly);
            }
            if target == actor && !is_admin(&a) {
                // D7: a non-admin manager may not remove itself.
                return Err(CoreError::SelfChange);
            }
            // D21.
            self.check_within(t, &a, u)?;
            if is_admin(u) && self.active_admins(t) <= 1 {
                return Err(CoreError::LastAdmin);
            }
            Ok(())
        })();
        if let Err(e) = decided {
            self.refuse(
                t,
                actor,
                AuditAction::UserDeleted,
                AuditTarget::User(target),
                &e,
            );
            return Err(e);
        }
        Ok(self.remove(t, target, actor))
    }

    /// [expired invitations (D20)](tenantry_core::Rule::ExpiredInvitations): every expired invitation the actor may delete goes in one call.
    pub(super) fn purge(&mut self, t: usize, actor: UserId) -> Result<Vec<UserId>, CoreError> {
        let Some(a) = self.user(t, actor).cloned() else {
            return Err(self.refuse_foreign(t, actor, AuditAction::UserDeleted, Action::Delete));
        };
        if let Err(e) = self.need(t, &a, Action::Delete) {
            self.refuse(t, actor, AuditAction::UserDeleted, AuditTarget::Tenant, &e);
            return Err(e);
        }
        let now = self.now;
        let ids: Vec<UserId> = self.t[t]
            .users
            .values()
            .filter(|u| {
                u.status == Status::Invited
                    && u.invite_expires_at.is_some_and(|x| x <= now)
                    && (u.role != Role::Admin || is_admin(&a))
                    // D21: a non-admin's purge skips invitations beyond its own access.
                    && self.check_within(t, &a, u).is_ok()
            })
            .map(|u| u.id)
            .collect();
        for id in &ids {
            self.remove(t, *id, actor);
        }
        Ok(ids)
    }

    pub(super) fn create_template(
        &mut self,
        t: usize,
        actor: UserId,
        name: &str,
        perms: Permissions,
        new_id: Option<TemplateId>,
    ) -> Result<RoleTemplate, CoreError> {
        let Some(a) = self.user(t, actor).cloned() else {
            return Err(self.refuse_foreign(
                t,
                actor,
                AuditAction::TemplateCreated,
                Action::Manage,
            ));
        };
        let display = match check_name(name, 64) {
            Ok(d) => d,
            Err(e) => {
                // D7 before the name's own rule.
                let e = match self.need(t, &a, Action::Manage) {
                    Err(n) => n,
                    Ok(()) => CoreError::InvalidTemplateName(e),
                };
                self.refuse(
                    t,
                    actor,
                    AuditAction::TemplateCreated,
                    AuditTarget::Tenant,
                    &e,
                );
                return Err(e);
            }
        };
        let decided = (|| {
            self.need(t, &a, Action::Manage)?;
            self.check_gain(t, &a, perms, false)?;
            let key = display.to_lowercase();
            if self.t[t]
                .templates
                .values()
                .any(|x| x.name.as_str().to_lowercase() == key)
            {
                return Err(CoreError::TemplateNameTaken {
                    name: display.clone(),
                });
            }
            Ok(())
        })();
        if let Err(e) = decided {
            self.refuse(
                t,
                actor,
                AuditAction::TemplateCreated,
                AuditTarget::Tenant,
                &e,
            );
            return Err(e);
        }
        let id = new_id.unwrap_or_else(ghost_template);
        let tpl = RoleTemplate {
            id,
            tenant_id: self.t[t].id,
            name: TemplateName::parse(&display).unwrap(),
            permissions: perms,
            created_at: self.now,
            updated_at: self.now,
        };
        self.t[t].templates.insert(id, tpl.clone());
        self.t[t].ever_templates.push(id);
        self.success(
            t,
            ActorRef::User(actor),
            AuditAction::TemplateCreated,
            AuditTarget::Template(id),
        );
        Ok(tpl)
    }

    pub(super) fn edit_template(
        &mut self,
        t: usize,
        actor: UserId,
        id: TemplateId,
        edit: &TemplateEdit,
    ) -> Result<RoleTemplate, CoreError> {
        let Some(a) = self.user(t, actor).cloned() else {
            return Err(self.refuse_foreign(t, actor, AuditAction::TemplateEdited, Action::Manage));
        };
        let decided = (|| {
            self.need(t, &a, Action::Manage)?;
            let Some(before) = self.t[t].templates.get(&id).cloned() else {
                return Err(CoreError::TemplateNotFound);
            };
            self.need(t, &a, Action::Manage)?;
            let mut after = before.clone();
            if let Some(name) = &edit.name {
                let key = name.as_str().to_lowercase();
                if key != before.name.as_str().to_lowercase()
                    && self.t[t]
                        .templates
                        .values()
                        .any(|x| x.id != id && x.name.as_str().to_lowercase() == key)
                {
                    return Err(CoreError::TemplateNameTaken {
                        name: name.as_str().to_owned(),
                    });
                }
                after.name = name.clone();
            }
            if let Some(p) = edit.permissions {
                after.permissions = p;
            }
            // D7: a non-admin may not change its own permissions through its template.
            if !is_admin(&a) && a.template_id == Some(id) && after.permissions != before.permissions
            {
                return Err(CoreError::SelfChange);
            }
            self.check_gain(t, &a, after.permissions - before.permissions, false)?;
            if after.permissions != before.permissions {
                self.check_all_within(t, &a, id)?;
            }
            Ok((before, after))
        })();
        let (before, mut after) = match decided {
            Ok(v) => v,
            Err(e) => {
                self.refuse(
                    t,
                    actor,
                    AuditAction::TemplateEdited,
                    AuditTarget::Template(id),
                    &e,
                );
                return Err(e);
            }
        };
        let mut detail = Vec::new();
        if before.name.as_str() != after.name.as_str() {
            detail.push(format!("{:?}", Field::Name));
        }
        if before.permissions != after.permissions {
            detail.push(change_of(
                Field::Permissions,
                Value::Permissions(before.permissions),
                Value::Permissions(after.permissions),
            ));
            // D13: the users whose access the edit changes.
            detail.extend(self.changed_users(t, id, before.permissions, after.permissions));
        }
        if detail.is_empty() {
            return Ok(before);
        }
        detail.sort();
        after.updated_at = self.now;
        self.t[t].templates.insert(id, after.clone());
        self.detailed(
            t,
            ActorRef::User(actor),
            AuditAction::TemplateEdited,
            AuditTarget::Template(id),
            detail,
        );
        Ok(after)
    }

    pub(super) fn delete_template(
        &mut self,
        t: usize,
        actor: UserId,
        id: TemplateId,
        mode: TemplateDeletion,
    ) -> Result<u64, CoreError> {
        let Some(a) = self.user(t, actor).cloned() else {
            return Err(self.refuse_foreign(
                t,
                actor,
                AuditAction::TemplateDeleted,
                Action::Manage,
            ));
        };
        let decided = (|| {
            self.need(t, &a, Action::Manage)?;
            let Some(tpl) = self.t[t].templates.get(&id).cloned() else {
                return Err(CoreError::TemplateNotFound);
            };
            let users = self.t[t]
                .users
                .values()
                .filter(|u| u.template_id == Some(id))
                .count() as u64;
            self.need(t, &a, Action::Manage)?;
            let to = match mode {
                TemplateDeletion::Refuse if users > 0 => {
                    return Err(CoreError::TemplateInUse { users });
                }
                TemplateDeletion::Reassign(to) => match self.t[t].templates.get(&to) {
                    Some(x) if to != id => Some(x.clone()),
                    _ => return Err(CoreError::TemplateNotFound),
                },
                _ => None,
            };
            if users > 0 && !is_admin(&a) {
                if a.template_id == Some(id) {
                    return Err(CoreError::SelfChange);
                }
                if let Some(to) = &to {
                    self.check_gain(t, &a, to.permissions - tpl.permissions, false)?;
                }
                self.check_all_within(t, &a, id)?;
            }
            Ok((users, to))
        })();
        let (users, to) = match decided {
            Ok(v) => v,
            Err(e) => {
                self.refuse(
                    t,
                    actor,
                    AuditAction::TemplateDeleted,
                    AuditTarget::Template(id),
                    &e,
                );
                return Err(e);
            }
        };
        let mut detail = vec![format!("{:?}", Field::Name)];
        if users > 0 {
            // D12, D13: how many users moved, and which of them now hold something else.
            let from = self.t[t].templates[&id].permissions;
            detail.push(change_of(
                Field::AffectedUsers,
                Value::Number(users),
                Value::Number(0),
            ));
            detail.push(format!("{:?}", Field::Template));
            let to_perms = to.as_ref().map_or(Permissions::empty(), |x| x.permissions);
            detail.extend(self.changed_users(t, id, from, to_perms));
        }
        detail.sort();
        let to = to.map(|x| x.id);
        for u in self.t[t].users.values_mut() {
            if u.template_id == Some(id) {
                u.template_id = to;
            }
        }
        self.t[t].templates.remove(&id);
        self.detailed(
            t,
            ActorRef::User(actor),
            AuditAction::TemplateDeleted,
            AuditTarget::Template(id),
            detail,
        );
        Ok(users)
    }

    /// [management authority (D7)](tenantry_core::Rule::ManagementAuthority), [listing (D18)](tenantry_core::Rule::Listing): the user table as a viewer may read it.
    pub(super) fn list(
        &self,
        t: usize,
        viewer: ActorRef,
        q: &UserQuery,
    ) -> Result<Vec<User>, ListErr> {
        if q.limit == 0 || q.limit > 500 {
            return Err(ListErr::Query(QueryError::LimitOutOfRange {
                limit: q.limit,
            }));
        }
        if let ActorRef::User(id) = viewer {
            let ok = self
                .user(t, id)
                .is_some_and(|v| self.need(t, v, Action::View).is_ok());
            if !ok {
                return Err(ListErr::Rule(not_allowed(Action::View)));
            }
        }
        let mut rows: Vec<User> = self.t[t]
            .users
            .values()
            .filter(|u| {
                q.status.is_none_or(|s| u.status == s)
                    && q.role.is_none_or(|r| u.role == r)
                    && q.template_id.is_none_or(|x| u.template_id == Some(x))
                    && q.crm_access.is_none_or(|c| u.crm_access == c)
                    && q.email_contains.as_deref().is_none_or(|needle| {
                        key_of(u.email.as_str()).contains(&needle.to_ascii_lowercase())
                    })
                    && q.inactive_since
                        .is_none_or(|s| u.last_login.is_none_or(|l| l < s))
                    && q.invitation_expired_at.is_none_or(|at| {
                        u.status == Status::Invited && u.invite_expires_at.is_some_and(|x| x <= at)
                    })
            })
            .cloned()
            .collect();
        match q.sort {
            SortBy::Email => rows.sort_by_key(|u| (key_of(u.email.as_str()), u.id)),
            SortBy::CreatedAt => rows.sort_by_key(|u| (u.created_at, u.id)),
            SortBy::LastLogin => rows.sort_by_key(|u| (u.last_login, u.id)),
        }
        if q.descending {
            rows.reverse();
        }
        Ok(rows)
    }

    /// [roles (D1)](tenantry_core::Rule::Roles), [CRM access (D5)](tenantry_core::Rule::CrmAccess), [current access (D6)](tenantry_core::Rule::CurrentAccess), [tenant isolation (D15)](tenantry_core::Rule::TenantIsolation): the decision `authorize` must give.
    pub(super) fn decision(&self, t: usize, id: UserId, req: Request) -> Decision {
        let deny = |reason| Decision::new(reason);
        let allow = |reason| Decision::new(reason);
        let Some(u) = self.user(t, id) else {
            return deny(Reason::UnknownUser);
        };
        match u.status {
            Status::Invited => return deny(Reason::Invited),
            Status::Suspended => return deny(Reason::Suspended),
            Status::Active => {}
        }
        if u.role == Role::Admin {
            return allow(Reason::Admin);
        }
        match req {
            Request::Crm if u.crm_access => allow(Reason::CrmAccess),
            Request::Crm => deny(Reason::NoCrmAccess),
            Request::Permission(p) if u.grants.contains(p.flag()) => allow(Reason::DirectGrant),
            Request::Permission(p) => match u.template_id {
                Some(tid) if self.template_perms(t, u).contains(p.flag()) => {
                    allow(Reason::Template { template_id: tid })
                }
                _ => deny(Reason::MissingPermission { permission: p }),
            },
        }
    }
}
