//! The harness: runs each step on the service and on the reference model, and compares
//! their answers and the visible state after it.

use std::fmt::Debug;

use tenantry_core::Error as CoreError;
use tenantry_core::{Field, Outcome};
use tenantry_service::{
    ActorRef, AuditAction, BulkInvite, BulkItem, BulkOutcome, Decision, Email, InMemoryMailer,
    InviteRequest, ManualClock, Policy, Request, Role, RoleTemplate, SeatUsage, Status,
    TemplateDeletion, TemplateEdit, TemplateName, TenantId, Tenantry, User, UserEdit, UserId,
    UserQuery,
};
use time::Duration;

use super::reference::{ExpEvent, ListErr, MToken, Model, TokState};
use super::strategies::{BulkEmail, EditSpec, Mode, Setup, Signup, Step, TokenPick, Who};
use super::{
    BAD_EMAILS, BASE_URL, CHECKED, EMAILS, RESEND_LIMIT, RESEND_WINDOW, START, TTL, change_text,
    check_name, crm_now, email_text, is_admin, name_text, note, tenant_name_text,
};

// ------------------------------------------------------------------------------ harness

type R<T = ()> = Result<T, String>;

thread_local! {
    static ACTOR_KIND: std::cell::RefCell<String> = const { std::cell::RefCell::new(String::new()) };
}

fn label<T>(r: &Result<T, CoreError>) -> String {
    match r {
        Ok(_) => "Ok".to_owned(),
        Err(e) => {
            let d = format!("{e:?}");
            d.split([' ', '(', '{'])
                .next()
                .unwrap_or_default()
                .to_owned()
        }
    }
}

macro_rules! ensure {
    ($cond:expr, $($arg:tt)+) => {
        if !$cond {
            return Err(format!($($arg)+));
        }
    };
}

fn show<T: Debug>(r: Result<&T, &tenantry_service::Error>) -> String {
    match r {
        Ok(v) => format!("Ok({v:?})"),
        Err(e) => format!("Err({e:?}) [rule {:?}: {e}]", e.rule()),
    }
}

fn show_expected<T: Debug>(r: &Result<T, CoreError>) -> String {
    match r {
        Ok(v) => format!("Ok({v:?})"),
        Err(e) => format!("Err({e:?}) [rule {:?}: {e}]", e.rule()),
    }
}

/// The service's answer must be the model's: same data, or the same rule error.
fn agree<T: PartialEq + Debug>(
    what: &str,
    expected: &Result<T, CoreError>,
    actual: Result<&T, &tenantry_service::Error>,
) -> R {
    let same = match (expected, actual) {
        (Ok(e), Ok(a)) => e == a,
        (Err(e), Err(a)) => a.as_rule() == Some(e),
        _ => false,
    };
    note(format!(
        "{}: {}{}",
        what.split('(').next().unwrap_or_default(),
        label(expected),
        ACTOR_KIND.with(|k| k.borrow().clone())
    ));
    ensure!(
        same,
        "{what}: disagreement\n  model:   {}\n  service: {}",
        show_expected(expected),
        show(actual)
    );
    Ok(())
}

/// [live links are secrets (D26)](tenantry_core::Rule::LiveLinksAreSecrets): the token of an accept link a call returned; the link is built from the base URL and
/// its `Debug` does not show it.
fn link_token(link: &tenantry_service::AcceptLink) -> R<String> {
    let token = link
        .token()
        .ok_or_else(|| "D26: an accept link without a token".to_owned())?;
    ensure!(
        link.expose() == format!("{BASE_URL}?token={token}"),
        "D10: the link {:?} is not built from the base URL",
        link.expose()
    );
    ensure!(
        !format!("{link:?}").contains(&token),
        "D26: the accept link's Debug shows the token"
    );
    Ok(token)
}

fn forge(token: &str) -> String {
    match token.split_once('.') {
        Some((tenant, secret)) => {
            let mut chars: Vec<char> = secret.chars().collect();
            if let Some(c) = chars.first_mut() {
                *c = if *c == 'A' { 'B' } else { 'A' };
            }
            format!("{tenant}.{}", chars.into_iter().collect::<String>())
        }
        None => format!("{token}x"),
    }
}

struct Harness {
    app: Tenantry,
    clock: ManualClock,
    mailer: InMemoryMailer,
    mail_seen: usize,
    /// Message ids the service returned, with the user each must have gone to and the token
    /// of the accept link returned with it ([live links are secrets (D26)](tenantry_core::Rule::LiveLinksAreSecrets): the link mailed is the link returned).
    expect_msgs: Vec<(tenantry_core::MessageId, UserId, String)>,
    /// Accept links a bulk invite returned, by user ([live links are secrets (D26)](tenantry_core::Rule::LiveLinksAreSecrets)).
    expect_links: Vec<(UserId, String)>,
    audit_seen: [u64; 2],
    tids: [TenantId; 2],
    m: Model,
    /// Whether `TENANTRY_MODEL_STATS` asks for coverage statistics.
    stats: bool,
}

fn email(i: usize, v: u8) -> R<Email> {
    let text = email_text(i, v);
    let e = Email::parse(&text).map_err(|e| format!("pool address {text:?} refused: {e}"))?;
    ensure!(
        e.as_str() == text.trim(),
        "D3: {text:?} must be stored trimmed, as typed; got {:?}",
        e.as_str()
    );
    Ok(e)
}

impl Harness {
    async fn new(factory: &crate::StoreFactory, setup: &Setup) -> R<Self> {
        let store = factory().await;
        let clock = ManualClock::new(START);
        let mailer = InMemoryMailer::new();
        let app = Tenantry::builder(store)
            .mailer(mailer.clone())
            .clock(clock.clone())
            .base_url(BASE_URL)
            .policy(Policy {
                invite_ttl: TTL,
                resend_limit: u32::try_from(RESEND_LIMIT).unwrap(),
                resend_window: RESEND_WINDOW,
            })
            .build()
            .map_err(|e| format!("building the service: {e}"))?;
        let mut m = Model {
            now: START,
            t: Vec::new(),
            tokens: Vec::new(),
            audit: [Vec::new(), Vec::new()],
            mail: Vec::new(),
            foreign: std::collections::HashMap::new(),
        };
        let mut tids = Vec::new();
        for (i, limit) in setup.limits.iter().enumerate() {
            let admin = email(0, 0)?;
            let (tid, admin_id) = app
                .create_tenant(&format!("Tenant {i}"), *limit, admin.clone())
                .await
                .map_err(|e| format!("create_tenant: {e}"))?;
            ensure!(!m.known(admin_id), "D11: id {admin_id} reused");
            m.add_tenant(tid, *limit, admin_id, admin);
            tids.push(tid);
        }
        Ok(Self {
            app,
            clock,
            mailer,
            mail_seen: 0,
            expect_msgs: Vec::new(),
            expect_links: Vec::new(),
            audit_seen: [0, 0],
            tids: [tids[0], tids[1]],
            m,
            stats: std::env::var_os("TENANTRY_MODEL_STATS").is_some(),
        })
    }

    /// Checks the mail the last call sent ([seat limit (D9)](tenantry_core::Rule::SeatLimit): none on refusal; [invitations (D10)](tenantry_core::Rule::Invitations): one per invite and
    /// resend, to the stored address) and records the tokens it carries.
    fn settle_mail(&mut self) -> R {
        let sent = self.mailer.sent();
        let new = &sent[self.mail_seen..];
        let mut got: Vec<(usize, UserId)> = Vec::new();
        for msg in new {
            let t = self
                .tids
                .iter()
                .position(|x| *x == msg.tenant_id)
                .ok_or_else(|| format!("mail for an unknown tenant: {msg:?}"))?;
            got.push((t, msg.user_id));
        }
        let mut want = std::mem::take(&mut self.m.mail);
        let mut got_sorted = got.clone();
        got_sorted.sort();
        want.sort();
        ensure!(
            got_sorted == want,
            "D9/D10: invitation mail: model expected mail to {want:?}, service sent to {got_sorted:?}"
        );
        for (msg, (t, _)) in new.iter().zip(got) {
            let user = self
                .m
                .user(t, msg.user_id)
                .ok_or_else(|| format!("mail to a user the model does not have: {msg:?}"))?;
            ensure!(
                msg.to == user.email.as_str(),
                "mail to {:?}, but the user's address is {:?}",
                msg.to,
                user.email.as_str()
            );
            ensure!(
                msg.text.contains(BASE_URL),
                "D10: the link must be built from the base URL: {:?}",
                msg.text
            );
            let token = tenantry_service::token_from_link(&msg.text)
                .ok_or_else(|| format!("no token in the mail: {:?}", msg.text))?;
            ensure!(
                !self.m.tokens.iter().any(|x| x.text == token),
                "D10: a token was issued twice"
            );
            let expires_at = user
                .invite_expires_at
                .ok_or_else(|| format!("invited user without an expiry: {user:?}"))?;
            self.m.tokens.push(MToken {
                text: token,
                t,
                user: msg.user_id,
                expires_at,
                state: TokState::Pending,
                failed: 0,
            });
        }
        let token_of = |m: &tenantry_service::Message| tenantry_service::token_from_link(&m.text);
        for (id, user, token) in std::mem::take(&mut self.expect_msgs) {
            ensure!(
                new.iter().any(|m| m.id == id && m.user_id == user),
                "the returned message id {id} was not delivered to {user}"
            );
            ensure!(
                new.iter()
                    .any(|m| m.id == id && token_of(m).as_deref() == Some(token.as_str())),
                "D26: the accept link returned with message {id} is not the one mailed"
            );
        }
        for (user, token) in std::mem::take(&mut self.expect_links) {
            ensure!(
                new.iter()
                    .any(|m| m.user_id == user && token_of(m).as_deref() == Some(token.as_str())),
                "D26: the accept link a bulk invite returned for {user} is not the one mailed"
            );
        }
        self.mail_seen = sent.len();
        Ok(())
    }

    /// [seat limit (D9)](tenantry_core::Rule::SeatLimit): right after a successful invite the tenant is within its limit.
    async fn within_limit(&self, t: usize) -> R {
        let s = self
            .app
            .seat_usage(self.tids[t])
            .await
            .map_err(|e| format!("seat_usage: {e}"))?;
        ensure!(
            s.limit.is_none_or(|l| s.used <= l),
            "D9: an invite succeeded but {} seats are used of {:?}",
            s.used,
            s.limit
        );
        Ok(())
    }

    fn token_text(&self, t: usize, pick: TokenPick) -> (String, Option<UserId>) {
        let toks = &self.m.tokens;
        let nth = |i: usize| toks.get(i % toks.len().max(1));
        let (text, user) = match pick {
            TokenPick::Latest(who) => {
                let uid = self.m.who(t, who);
                match toks.iter().rev().find(|x| x.user == uid).or(toks.last()) {
                    Some(x) => (x.text.clone(), Some(x.user)),
                    None => ("garbage".to_owned(), None),
                }
            }
            TokenPick::Any(i) => match nth(i) {
                Some(x) => (x.text.clone(), Some(x.user)),
                None => ("garbage".to_owned(), None),
            },
            TokenPick::Live(i) => {
                let live: Vec<&MToken> = toks
                    .iter()
                    .filter(|x| x.state == TokState::Pending && self.m.now < x.expires_at)
                    .collect();
                match live.get(i % live.len().max(1)).copied().or_else(|| nth(i)) {
                    Some(x) => (x.text.clone(), Some(x.user)),
                    None => ("garbage".to_owned(), None),
                }
            }
            TokenPick::Forged(i) => match nth(i) {
                Some(x) => (forge(&x.text), Some(x.user)),
                None => ("garbage".to_owned(), None),
            },
            TokenPick::OtherTenant(i) => match nth(i) {
                Some(x) => {
                    let other = self.tids[1 - x.t].as_uuid().simple().to_string();
                    let secret = x.text.split_once('.').map_or("", |(_, s)| s);
                    (format!("{other}.{secret}"), Some(x.user))
                }
                None => ("garbage".to_owned(), None),
            },
            TokenPick::Garbage => ("not-a-token".to_owned(), None),
        };
        (text, user)
    }

    fn signup_text(&self, user: Option<UserId>, pick: Signup) -> String {
        let stored = user
            .and_then(|id| {
                self.m
                    .t
                    .iter()
                    .find_map(|t| t.users.get(&id).map(|u| u.email.as_str().to_owned()))
            })
            .unwrap_or_else(|| EMAILS[1].to_owned());
        match pick {
            Signup::Right => stored,
            Signup::Variant => format!(" {} ", stored.to_ascii_uppercase()),
            Signup::Wrong(i) => EMAILS[i % EMAILS.len()].to_owned(),
            Signup::Invalid(i) => BAD_EMAILS[i % BAD_EMAILS.len()].to_owned(),
        }
    }

    /// What kind of actor an id is in tenant `t`, for the coverage statistics.
    fn kind(&self, t: usize, id: UserId) -> &'static str {
        match self.m.user(t, id) {
            Some(u) if is_admin(u) => "active admin",
            Some(u) if u.status == Status::Active => "active user",
            Some(u) if u.status == Status::Invited => "invited",
            Some(_) => "suspended",
            None if self.m.t[t].tombstones.contains_key(&id) => "deleted",
            None if self.m.known(id) => "other tenant",
            None => "never existed",
        }
    }

    /// Counts who acts in `step`, for the coverage statistics.
    fn note_actor(&self, step: &Step) {
        let (op, t, actor) = match step {
            Step::Invite { t, actor, .. } => ("invite", *t, Some(*actor)),
            Step::InviteMany { t, actor, .. } => ("invite_many", *t, Some(*actor)),
            Step::Resend { t, actor, .. } => ("resend", *t, Some(*actor)),
            Step::Edit { t, actor, .. } => ("edit", *t, Some(*actor)),
            Step::Delete { t, actor, .. } => ("delete", *t, Some(*actor)),
            Step::Purge { t, actor } => ("purge", *t, Some(*actor)),
            Step::CreateTemplate { t, actor, .. } => ("create_template", *t, Some(*actor)),
            Step::EditTemplate { t, actor, .. } => ("edit_template", *t, Some(*actor)),
            Step::DeleteTemplate { t, actor, .. } => ("delete_template", *t, Some(*actor)),
            _ => ("", 0, None),
        };
        if let Some(actor) = actor {
            let id = self.m.who(t, actor);
            let kind = self.kind(t, id);
            let grants = self
                .m
                .user(t, id)
                .map_or(0, |u| u.grants.bits().count_ones());
            let kind = format!(
                " [by {kind}{}]",
                if kind == "active user" && grants > 0 {
                    " with grants"
                } else {
                    ""
                }
            );
            note(format!("~actor {op} by{kind}"));
            ACTOR_KIND.with(|k| *k.borrow_mut() = kind);
        } else {
            ACTOR_KIND.with(|k| k.borrow_mut().clear());
        }
    }

    async fn step(&mut self, step: &Step) -> R {
        if self.stats {
            self.note_actor(step);
        }
        match step {
            Step::SetLimit { t, limit } => {
                let actual = self.app.set_user_limit(self.tids[*t], *limit).await;
                let expected = Ok(self.m.set_limit(*t, *limit));
                agree("set_user_limit", &expected, actual.as_ref())?;
            }
            Step::Invite {
                t,
                actor,
                email: (ei, ev),
                role,
                template,
                crm,
                grants,
            } => {
                let actor = self.m.who(*t, *actor);
                let req = InviteRequest {
                    email: email(*ei, *ev)?,
                    role: *role,
                    template_id: template.map(|x| self.m.tpl(*t, x)),
                    crm_access: *crm,
                    grants: *grants,
                };
                let actual = self.app.invite(self.tids[*t], actor, &req).await;
                let new_id = actual.as_ref().ok().map(|i| i.user.id);
                if let Some(id) = new_id {
                    ensure!(!self.m.known(id), "D11: id {id} reused");
                }
                let expected = self.m.invite(*t, actor, &req, new_id);
                agree("invite", &expected, actual.as_ref().map(|i| &i.user))?;
                if let Ok(inv) = &actual {
                    let token = link_token(&inv.accept_link)?;
                    self.expect_msgs.push((inv.message_id, inv.user.id, token));
                    self.within_limit(*t).await?;
                }
                self.settle_mail()?;
            }
            Step::InviteMany {
                t,
                actor,
                emails,
                role,
                template,
                crm,
                grants,
            } => {
                let actor = self.m.who(*t, *actor);
                let req = BulkInvite {
                    emails: emails
                        .iter()
                        .map(|e| match e {
                            BulkEmail::Valid(i, v) => email_text(*i, *v),
                            BulkEmail::Invalid(i) => BAD_EMAILS[*i % BAD_EMAILS.len()].to_owned(),
                        })
                        .collect(),
                    role: *role,
                    template_id: template.map(|x| self.m.tpl(*t, x)),
                    crm_access: *crm,
                    grants: *grants,
                };
                let actual = self.app.invite_many(self.tids[*t], actor, &req).await;
                let ids: Vec<Option<UserId>> = match &actual {
                    Ok(items) => items
                        .iter()
                        .map(|i| match i.outcome {
                            BulkOutcome::Invited { user_id } => Some(user_id),
                            _ => None,
                        })
                        .collect(),
                    Err(_) => Vec::new(),
                };
                for id in ids.iter().flatten() {
                    ensure!(!self.m.known(*id), "D11: id {id} reused");
                }
                let expected = self.m.invite_many(*t, actor, &req, &ids);
                let items: Result<Vec<BulkItem>, &tenantry_service::Error> = match &actual {
                    Ok(results) => {
                        for r in results {
                            // D26: a link for each invited address, and only for those.
                            match (&r.outcome, &r.accept_link) {
                                (BulkOutcome::Invited { user_id }, Some(link)) => {
                                    self.expect_links.push((*user_id, link_token(link)?));
                                }
                                (BulkOutcome::Invited { .. }, None) => {
                                    return Err(format!("D26: no accept link for {r:?}"));
                                }
                                (_, Some(_)) => {
                                    return Err(format!("D26: an accept link for {r:?}"));
                                }
                                (_, None) => {}
                            }
                        }
                        Ok(results
                            .iter()
                            .map(|r| BulkItem {
                                input: r.input.clone(),
                                outcome: r.outcome.clone(),
                            })
                            .collect())
                    }
                    Err(e) => Err(e),
                };
                agree("invite_many", &expected, items.as_ref().map_err(|e| *e))?;
                if ids.iter().any(Option::is_some) {
                    self.within_limit(*t).await?;
                }
                self.settle_mail()?;
            }
            Step::Onboard {
                t,
                email: (ei, ev),
                template,
                crm,
                grants,
                suspend,
            } => {
                let invite = Step::Invite {
                    t: *t,
                    actor: Who::First,
                    email: (*ei, *ev),
                    role: Role::User,
                    template: *template,
                    crm: *crm,
                    grants: *grants,
                };
                Box::pin(self.step(&invite)).await?;
                let id = *self.m.t[*t].ever.last().unwrap();
                if self
                    .m
                    .user(*t, id)
                    .is_some_and(|u| u.status == Status::Invited)
                {
                    let accept = Step::Accept {
                        t: *t,
                        token: TokenPick::Latest(Who::Last),
                        email: Signup::Right,
                    };
                    Box::pin(self.step(&accept)).await?;
                }
                if *suspend
                    && self
                        .m
                        .user(*t, id)
                        .is_some_and(|u| u.status == Status::Active)
                {
                    let edit = Step::Edit {
                        t: *t,
                        actor: Who::First,
                        target: Some(Who::Last),
                        edit: EditSpec {
                            email: None,
                            role: None,
                            status: Some(Status::Suspended),
                            template: None,
                            crm: None,
                            grants: None,
                        },
                    };
                    Box::pin(self.step(&edit)).await?;
                }
            }
            Step::Resend {
                t,
                actor,
                target,
                times,
            } => {
                let actor = self.m.who(*t, *actor);
                let target = self.m.who(*t, *target);
                for _ in 0..*times {
                    let actual = self
                        .app
                        .resend_invitation(self.tids[*t], actor, target)
                        .await;
                    let expected = self.m.resend(*t, actor, target);
                    agree("resend_invitation", &expected, actual.as_ref().map(|_| &()))?;
                    if let Ok(resent) = actual {
                        let expires = self.m.user(*t, target).and_then(|u| u.invite_expires_at);
                        ensure!(
                            Some(resent.expires_at) == expires,
                            "D10: the resend says its link expires at {}, the model at {expires:?}",
                            resent.expires_at
                        );
                        let token = link_token(&resent.accept_link)?;
                        self.expect_msgs.push((resent.message_id, target, token));
                    }
                    self.settle_mail()?;
                }
            }
            Step::Accept { t, token, email } => {
                let (text, user) = self.token_text(*t, *token);
                let signup = self.signup_text(user, *email);
                let actual = self.app.accept_invitation(&text, &signup).await;
                let expected = self.m.accept(&text, &signup);
                agree(
                    &format!("accept_invitation({signup:?})"),
                    &expected,
                    actual.as_ref(),
                )?;
                self.settle_mail()?;
            }
            Step::AcceptAttempts {
                t,
                token,
                wrong,
                then,
            } => {
                let (text, user) = self.token_text(*t, *token);
                let signups = wrong
                    .iter()
                    .map(|i| Signup::Wrong(*i))
                    .chain(std::iter::once(*then));
                for pick in signups {
                    let signup = self.signup_text(user, pick);
                    let actual = self.app.accept_invitation(&text, &signup).await;
                    let expected = self.m.accept(&text, &signup);
                    agree(
                        &format!("accept_invitation({signup:?}) in a run"),
                        &expected,
                        actual.as_ref(),
                    )?;
                }
                self.settle_mail()?;
            }
            Step::CreateTenant { name, limit } => {
                let name = tenant_name_text(*name);
                let admin = email(1, 0)?;
                let actual = self.app.create_tenant(&name, *limit, admin).await;
                // D22, D23. Choice: the name is checked before the limit.
                let expected = check_name(&name, 100)
                    .map_err(CoreError::InvalidTenantName)
                    .and_then(|trimmed| match limit {
                        Some(0) => Err(CoreError::FirstSeatRequired),
                        _ => Ok(trimmed),
                    });
                agree(
                    &format!("create_tenant({name:?}, {limit:?})"),
                    &expected.as_ref().map(|_| ()).map_err(Clone::clone),
                    actual.as_ref().map(|_| &()),
                )?;
                if let (Ok((tid, admin_id)), Ok(trimmed)) = (&actual, &expected) {
                    ensure!(!self.m.known(*admin_id), "D11: id {admin_id} reused");
                    let state = self
                        .app
                        .tenant(*tid)
                        .await
                        .map_err(|e| format!("tenant: {e}"))?;
                    ensure!(
                        state.tenant.name == *trimmed && state.tenant.user_limit == *limit,
                        "D22: tenant stored as {:?} with limit {:?}; expected {trimmed:?}, {limit:?}",
                        state.tenant.name,
                        state.tenant.user_limit
                    );
                    let seats = self
                        .app
                        .seat_usage(*tid)
                        .await
                        .map_err(|e| format!("seat_usage: {e}"))?;
                    ensure!(
                        seats
                            == SeatUsage {
                                used: 1,
                                limit: *limit,
                                remaining: limit.map(|l| l - 1),
                                at_limit: *limit == Some(1),
                            },
                        "D9/D23: a new tenant's seats: {seats:?}"
                    );
                }
            }
            Step::SignIn { t, user } => {
                let user = self.m.who(*t, *user);
                let actual = self.app.record_sign_in(self.tids[*t], user).await;
                let expected = self.m.sign_in(*t, user);
                agree("record_sign_in", &expected, actual.as_ref())?;
            }
            Step::Edit {
                t,
                actor,
                target,
                edit,
            } => {
                let actor = self.m.who(*t, *actor);
                let target = target.map_or(actor, |w| self.m.who(*t, w));
                let e = UserEdit {
                    email: match edit.email {
                        Some((i, v)) => Some(email(i, v)?),
                        None => None,
                    },
                    role: edit.role,
                    status: edit.status,
                    template_id: edit.template.map(|o| o.map(|x| self.m.tpl(*t, x))),
                    crm_access: edit.crm,
                    grants: edit.grants,
                };
                let actual = self.app.edit_user(self.tids[*t], actor, target, &e).await;
                let expected = self.m.edit(*t, actor, target, &e);
                agree(&format!("edit_user({e:?})"), &expected, actual.as_ref())?;
            }
            Step::Delete { t, actor, target } => {
                let actor = self.m.who(*t, *actor);
                let target = target.map_or(actor, |w| self.m.who(*t, w));
                let actual = self.app.delete_user(self.tids[*t], actor, target).await;
                let expected = self.m.delete(*t, actor, target);
                agree("delete_user", &expected, actual.as_ref())?;
            }
            Step::Purge { t, actor } => {
                let actor = self.m.who(*t, *actor);
                let mut actual = self
                    .app
                    .purge_expired_invitations(self.tids[*t], actor)
                    .await;
                if let Ok(ids) = &mut actual {
                    ids.sort();
                }
                let expected = self.m.purge(*t, actor);
                agree("purge_expired_invitations", &expected, actual.as_ref())?;
            }
            Step::CreateTemplate {
                t,
                actor,
                name,
                perms,
            } => {
                let actor = self.m.who(*t, *actor);
                let name = name_text(*name);
                let actual = self
                    .app
                    .create_template(self.tids[*t], actor, &name, *perms)
                    .await;
                let new_id = actual.as_ref().ok().map(|x| x.id);
                if let Some(id) = new_id {
                    ensure!(
                        !self.m.t.iter().any(|x| x.ever_templates.contains(&id)),
                        "template id {id} reused"
                    );
                }
                let expected = self.m.create_template(*t, actor, &name, *perms, new_id);
                agree(
                    &format!("create_template({name:?})"),
                    &expected,
                    actual.as_ref(),
                )?;
            }
            Step::EditTemplate {
                t,
                actor,
                tpl,
                name,
                perms,
            } => {
                let actor = self.m.who(*t, *actor);
                let id = self.m.tpl(*t, *tpl);
                let edit = TemplateEdit {
                    name: name.map(|n| TemplateName::parse(&name_text(n)).unwrap()),
                    permissions: *perms,
                };
                let actual = self
                    .app
                    .edit_template(self.tids[*t], actor, id, &edit)
                    .await;
                let expected = self.m.edit_template(*t, actor, id, &edit);
                agree(
                    &format!("edit_template({edit:?})"),
                    &expected,
                    actual.as_ref(),
                )?;
            }
            Step::DeleteTemplate {
                t,
                actor,
                tpl,
                mode,
            } => {
                let actor = self.m.who(*t, *actor);
                let id = self.m.tpl(*t, *tpl);
                let mode = match mode {
                    Mode::Refuse => TemplateDeletion::Refuse,
                    Mode::Detach => TemplateDeletion::Detach,
                    Mode::Reassign(x) => TemplateDeletion::Reassign(self.m.tpl(*t, *x)),
                };
                let actual = self
                    .app
                    .delete_template(self.tids[*t], actor, id, mode)
                    .await;
                let expected = self.m.delete_template(*t, actor, id, mode);
                agree(
                    &format!("delete_template({mode:?})"),
                    &expected,
                    actual.as_ref(),
                )?;
            }
            Step::Advance { minutes } => {
                self.clock.advance(Duration::minutes(*minutes));
                self.m.now += Duration::minutes(*minutes);
                ensure!(self.app.now() == self.m.now, "the clock did not move");
            }
            Step::List { t, viewer, query } => {
                let viewer = match viewer {
                    Some(w) => ActorRef::User(self.m.who(*t, *w)),
                    None => ActorRef::System,
                };
                let q = UserQuery {
                    status: query.status,
                    role: query.role,
                    template_id: query.template.map(|x| self.m.tpl(*t, x)),
                    crm_access: query.crm,
                    email_contains: query.contains.map(str::to_owned),
                    inactive_since: query.inactive_days.map(|d| self.m.now - Duration::days(d)),
                    invitation_expired_at: query.expired.then_some(self.m.now),
                    sort: query.sort,
                    descending: query.descending,
                    after: None,
                    limit: query.limit,
                };
                let actual = self.list_all(*t, viewer, &q).await;
                let expected = self.m.list(*t, viewer, &q);
                let same = match (&expected, &actual) {
                    (Ok(e), Ok(a)) => e == a,
                    (Err(ListErr::Rule(e)), Err(a)) => a.as_rule() == Some(e),
                    (Err(ListErr::Query(e)), Err(tenantry_service::Error::Query(a))) => e == a,
                    _ => false,
                };
                ensure!(
                    same,
                    "list_users({q:?}) by {viewer:?}: disagreement\n  model:   {expected:?}\n  service: {}",
                    show(actual.as_ref())
                );
            }
        }
        Ok(())
    }

    /// Reads every page of a query ([listing (D18)](tenantry_core::Rule::Listing)), checking page sizes and cursors.
    async fn list_all(
        &self,
        t: usize,
        viewer: ActorRef,
        q: &UserQuery,
    ) -> Result<Vec<User>, tenantry_service::Error> {
        let mut all = Vec::new();
        let mut q = q.clone();
        for _ in 0..200 {
            let page = self.app.list_users(self.tids[t], viewer, &q).await?;
            assert!(
                page.items.len() <= usize::try_from(q.limit).unwrap(),
                "D18: a page of {} rows for a limit of {}",
                page.items.len(),
                q.limit
            );
            all.extend(page.items);
            match page.next {
                Some(c) => q.after = Some(c),
                None => return Ok(all),
            }
        }
        panic!("D18: paging did not end after 200 pages");
    }

    /// The audit events of the step ([audit log (D13)](tenantry_core::Rule::AuditLog)), per tenant, against the model's.
    async fn check_audit(&mut self) -> R {
        for t in 0..2 {
            let recs = self
                .app
                .audit_log(self.tids[t], ActorRef::System, self.audit_seen[t], 500)
                .await
                .map_err(|e| format!("audit_log: {e}"))?;
            let mut got = Vec::new();
            for (i, r) in recs.iter().enumerate() {
                let seq = self.audit_seen[t] + 1 + i as u64;
                ensure!(
                    r.seq == seq,
                    "D13: audit feed of tenant {t} skipped or repeated: seq {} where {seq} was due",
                    r.seq
                );
                ensure!(
                    r.event.tenant_id == self.tids[t] && r.event.at == self.m.now,
                    "D13: event with the wrong tenant or time: {r:?}"
                );
                let refused = match &r.event.outcome {
                    Outcome::Success => None,
                    Outcome::Refused { rule, .. } => Some(*rule),
                };
                // D26: no audit record shows a token the service issued.
                let text = format!("{r:?}");
                if let Some(tok) = self.m.tokens.iter().find(|x| text.contains(&x.text)) {
                    return Err(format!(
                        "D26: the audit record {r:?} shows the token {}",
                        tok.text
                    ));
                }
                // What the model predicts of each event's changes: refusals all of them (the
                // address a refused invite tried, D24's counts); edits and deletions the
                // permission sets and the users reached (D13), other fields by name.
                let mut detail = Vec::new();
                let full: &[Field] = match (refused, r.event.action) {
                    (Some(_), _) => &[],
                    (None, AuditAction::UserEdited) => &[Field::Grants],
                    (None, AuditAction::TemplateEdited) => {
                        &[Field::Permissions, Field::ChangedUsers]
                    }
                    (None, AuditAction::TemplateDeleted) => {
                        &[Field::AffectedUsers, Field::ChangedUsers]
                    }
                    _ => &[],
                };
                let listed = refused.is_some()
                    || matches!(
                        r.event.action,
                        AuditAction::UserEdited
                            | AuditAction::TemplateEdited
                            | AuditAction::TemplateDeleted
                    );
                if listed {
                    for c in &r.event.changes {
                        detail.push(if refused.is_some() || full.contains(&c.field) {
                            change_text(c)
                        } else {
                            format!("{:?}", c.field)
                        });
                    }
                    detail.sort();
                }
                got.push(format!(
                    "{:?}",
                    ExpEvent {
                        actor: r.event.actor,
                        action: r.event.action,
                        target: r.event.target,
                        refused,
                        detail,
                    }
                ));
            }
            if let Some(last) = recs.last() {
                self.audit_seen[t] = last.seq;
            }
            let mut want: Vec<String> = std::mem::take(&mut self.m.audit[t])
                .iter()
                .map(|e| format!("{e:?}"))
                .collect();
            got.sort();
            want.sort();
            ensure!(
                got == want,
                "D13: audit events of tenant {t} disagree\n  model:   {want:#?}\n  service: {got:#?}"
            );
        }
        Ok(())
    }

    /// The visible state of both tenants against the model, and the invariants.
    async fn check_state(&mut self) -> R {
        let err = |what: &str| {
            let what = what.to_owned();
            move |e: tenantry_service::Error| format!("{what}: {e:?}")
        };
        for t in 0..2 {
            let tid = self.tids[t];
            // The user table, paged through three rows at a time (D18).
            let q = UserQuery {
                limit: 3,
                ..UserQuery::default()
            };
            let rows = self
                .list_all(t, ActorRef::System, &q)
                .await
                .map_err(err("list_users"))?;
            let want = self.m.list(t, ActorRef::System, &q).unwrap();
            ensure!(
                rows == want,
                "user table of tenant {t} disagrees\n  model:   {want:#?}\n  service: {rows:#?}"
            );
            // D8.
            let admins = rows.iter().filter(|u| is_admin(u)).count();
            ensure!(admins >= 1, "D8: tenant {t} has no active admin left");
            // D9.
            let state = self.app.tenant(tid).await.map_err(err("tenant"))?;
            ensure!(
                state.counters.seats_used as usize == rows.len(),
                "D9: tenant {t} counts {} seats for {} rows",
                state.counters.seats_used,
                rows.len()
            );
            ensure!(
                state.counters.active_admins as usize == admins,
                "D8: tenant {t} counts {} active admins for {admins}",
                state.counters.active_admins
            );
            ensure!(
                state.tenant.user_limit == self.m.t[t].limit,
                "D9: tenant {t} limit {:?}, model {:?}",
                state.tenant.user_limit,
                self.m.t[t].limit
            );
            let seats = self.app.seat_usage(tid).await.map_err(err("seat_usage"))?;
            ensure!(
                seats == self.m.seats(t),
                "D9: seat usage of tenant {t}: service {seats:?}, model {:?}",
                self.m.seats(t)
            );
            // Templates (D12) and who references them.
            let tpls = self
                .app
                .templates(tid, ActorRef::System)
                .await
                .map_err(err("templates"))?;
            let mut want_tpls: Vec<RoleTemplate> =
                self.m.t[t].templates.values().cloned().collect();
            want_tpls.sort_by_key(|x| (x.name.as_str().to_lowercase(), x.id));
            ensure!(
                tpls == want_tpls,
                "D12: templates of tenant {t} disagree\n  model:   {want_tpls:#?}\n  service: {tpls:#?}"
            );
            for tpl in &want_tpls {
                let q = UserQuery {
                    template_id: Some(tpl.id),
                    limit: 500,
                    ..UserQuery::default()
                };
                let got = self
                    .app
                    .template_users(tid, ActorRef::System, tpl.id, &q)
                    .await
                    .map_err(err("template_users"))?;
                let want = self.m.list(t, ActorRef::System, &q).unwrap();
                ensure!(
                    got.items == want && got.next.is_none(),
                    "D12: users of template {:?} disagree\n  model:   {want:?}\n  service: {:?}",
                    tpl.name,
                    got.items
                );
            }
            // D26: the outbox as the service shows it holds no body, and the store has
            // cleared the body of every message sent (the model's mailer never fails).
            let outbox = self
                .app
                .outbox(tid, false, 500)
                .await
                .map_err(err("outbox"))?;
            let stored = self
                .app
                .store()
                .outbox(tid, false, 500)
                .await
                .map_err(|e| format!("store outbox: {e}"))?;
            for r in outbox.iter().chain(&stored) {
                ensure!(
                    r.message.text.is_empty() && r.message.html.is_empty(),
                    "D26: a message body holding a live link is still readable: {r:?}"
                );
            }
            // D20: expired invitations.
            let q = UserQuery {
                limit: 500,
                ..UserQuery::default()
            };
            let got = self
                .app
                .expired_invitations(tid, ActorRef::System, &q)
                .await
                .map_err(err("expired_invitations"))?;
            let want = self
                .m
                .list(
                    t,
                    ActorRef::System,
                    &UserQuery {
                        invitation_expired_at: Some(self.m.now),
                        ..q.clone()
                    },
                )
                .unwrap();
            ensure!(
                got.items == want,
                "D20: expired invitations of tenant {t} disagree\n  model:   {want:?}\n  service: {:?}",
                got.items
            );
            // D6, D15: every user ever created, in its tenant and in the other one.
            for id in self.m.t[t].ever.clone() {
                let requests = CHECKED
                    .iter()
                    .map(|p| Request::Permission(*p))
                    .chain([Request::Crm]);
                for req in requests {
                    let got = self
                        .app
                        .authorize(tid, id, req)
                        .await
                        .map_err(err("authorize"))?;
                    let want = self.m.decision(t, id, req);
                    ensure!(
                        got == want,
                        "D6: authorize({id}, {req:?}) in tenant {t}: service {got:?}, model {want:?}"
                    );
                }
                let other = self
                    .app
                    .authorize(self.tids[1 - t], id, Request::Crm)
                    .await
                    .map_err(err("authorize"))?;
                ensure!(
                    other == Decision::unknown_user(),
                    "D15: a user of tenant {t} is known in the other tenant: {other:?}"
                );
                let eff = self.app.effective_permissions(tid, id).await;
                match (self.m.user(t, id), &eff) {
                    (Some(u), Ok((p, crm))) => {
                        let want = (self.m.holds(t, u), crm_now(u));
                        ensure!(
                            (*p, *crm) == want,
                            "D6: effective permissions of {id}: service {:?}, model {want:?}",
                            (p, crm)
                        );
                    }
                    (None, Err(e)) if e.as_rule() == Some(&CoreError::UserNotFound) => {}
                    (u, _) => {
                        return Err(format!(
                            "effective_permissions({id}): service {}, model user {u:?}",
                            show(eff.as_ref())
                        ));
                    }
                }
                let attr = self
                    .app
                    .attribution(tid, id)
                    .await
                    .map_err(err("attribution"))?;
                let want = match (self.m.user(t, id), self.m.t[t].tombstones.get(&id)) {
                    (Some(u), _) => Some(tenantry_service::Attribution::User(u.clone())),
                    (None, Some(tomb)) => {
                        Some(tenantry_service::Attribution::Deleted(tomb.clone()))
                    }
                    (None, None) => None,
                };
                ensure!(
                    attr == want,
                    "D11: attribution of {id}: service {attr:?}, model {want:?}"
                );
                let foreign = self
                    .app
                    .attribution(self.tids[1 - t], id)
                    .await
                    .map_err(err("attribution"))?;
                ensure!(
                    foreign.is_none(),
                    "D15: attribution of a user of tenant {t} in the other tenant: {foreign:?}"
                );
            }
        }
        Ok(())
    }

    async fn check(&mut self) -> R {
        ensure!(
            self.m.mail.is_empty() && self.expect_msgs.is_empty() && self.expect_links.is_empty(),
            "internal: unsettled mail"
        );
        self.settle_mail()?;
        self.check_audit().await?;
        self.check_state().await
    }
}

pub(super) fn describe(steps: &[Step]) -> String {
    steps
        .iter()
        .enumerate()
        .map(|(i, s)| format!("  {i:>2}: {s:?}"))
        .collect::<Vec<_>>()
        .join("\n")
}

pub(super) async fn run_case(factory: &crate::StoreFactory, setup: &Setup, steps: &[Step]) -> R {
    let mut h = Harness::new(factory, setup).await?;
    for (t, name, perms) in &setup.templates {
        let step = Step::CreateTemplate {
            t: *t,
            actor: Who::First,
            name: *name,
            perms: *perms,
        };
        h.step(&step)
            .await
            .map_err(|e| format!("setup ({step:?}): {e}"))?;
    }
    for step in &setup.onboard {
        h.step(step)
            .await
            .map_err(|e| format!("setup ({step:?}): {e}"))?;
    }
    h.check().await.map_err(|e| format!("after setup: {e}"))?;
    for (i, step) in steps.iter().enumerate() {
        h.step(step)
            .await
            .map_err(|e| format!("step {i} ({step:?}): {e}"))?;
        h.check()
            .await
            .map_err(|e| format!("after step {i} ({step:?}): {e}"))?;
    }
    Ok(())
}
