//! Quickstart: the whole Users page on the in-memory store, in the terminal.
//!
//! Creates a tenant, invites two people, accepts one invitation, builds a role template and
//! assigns it, edits a user, resends an invitation, deletes a user, and prints the user table
//! with the page's columns and the seat indicator after each step; then lists the tenants of
//! one person by address and by the host's identity id.
//!
//! Run with `cargo run --example quickstart`.

use tenantry::prelude::*;
use tenantry::{ActorRef, Error, IdentityId, RoleTemplate, TenantId, User};

fn when(t: Option<time::OffsetDateTime>) -> String {
    t.map_or_else(
        || "never".to_owned(),
        |t| {
            format!(
                "{:04}-{:02}-{:02} {:02}:{:02}",
                t.year(),
                u8::from(t.month()),
                t.day(),
                t.hour(),
                t.minute()
            )
        },
    )
}

async fn print_table(app: &Tenantry, tenant: TenantId, title: &str) -> Result<(), Error> {
    let seats = app.seat_usage(tenant).await?;
    let templates: Vec<RoleTemplate> = app.templates(tenant, ActorRef::System).await?;
    let page = app
        .list_users(tenant, ActorRef::System, &UserQuery::default())
        .await?;
    println!("\n== {title}");
    let limit = seats
        .limit
        .map_or("unlimited".to_owned(), |l| l.to_string());
    let warn = if seats.at_limit {
        "  (limit reached: invites disabled)"
    } else {
        ""
    };
    println!("Seats: {} of {limit} used{warn}", seats.used);
    println!(
        "{:<24} {:<6} {:<16} {:<10} {:<4} {:<17}",
        "Email", "Role", "Role template", "Status", "CRM", "Last login"
    );
    for u in &page.items {
        let template = u
            .template_id
            .and_then(|id| templates.iter().find(|t| t.id == id))
            .map_or("-".to_owned(), |t| t.name.to_string());
        println!(
            "{:<24} {:<6} {:<16} {:<10} {:<4} {:<17}",
            u.email.as_str(),
            u.role.as_str(),
            template,
            u.status.as_str(),
            if u.crm_access { "yes" } else { "no" },
            when(u.last_login)
        );
    }
    Ok(())
}

fn show(user: &User, what: &str) {
    println!("-> {what}: {} is {}", user.email, user.status);
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mailer = InMemoryMailer::new();
    let app = Tenantry::builder(InMemoryStore::new())
        .mailer(mailer.clone())
        .base_url("https://app.example.com/accept")
        .build()?;

    let (tenant, admin) = app
        .create_tenant("Acme Support", Some(3), Email::parse("ada@acme.test")?)
        .await?;
    print_table(&app, tenant, "a new tenant with its first admin").await?;

    // A role template for support agents.
    let agent = app
        .create_template(
            tenant,
            admin,
            "Support agent",
            "conversations:view,conversations:create,conversations:edit".parse()?,
        )
        .await?;

    // Invite two people.
    let bob = app
        .invite(
            tenant,
            admin,
            &InviteRequest {
                email: Email::parse("Bob@acme.test")?,
                role: Role::User,
                template_id: Some(agent.id),
                crm_access: true,
                grants: Permissions::empty(),
            },
        )
        .await?;
    let carol = app
        .invite(
            tenant,
            admin,
            &InviteRequest {
                email: Email::parse("carol@acme.test")?,
                role: Role::User,
                template_id: None,
                crm_access: false,
                grants: Permissions::ANALYTICS_VIEW,
            },
        )
        .await?;
    print_table(&app, tenant, "two invitations sent").await?;

    // The seat limit holds: a fourth user does not fit.
    let refused = app
        .invite(
            tenant,
            admin,
            &InviteRequest {
                email: Email::parse("dave@acme.test")?,
                role: Role::User,
                template_id: None,
                crm_access: false,
                grants: Permissions::empty(),
            },
        )
        .await;
    if let Err(e) = refused {
        println!(
            "-> invite refused ({}): {e}",
            e.rule().map_or("-".into(), |r| r.to_string())
        );
    }

    // Bob accepts the link from his mail.
    let mail = mailer
        .sent()
        .into_iter()
        .find(|m| m.user_id == bob.user.id)
        .ok_or("no mail for bob")?;
    let token = tenantry::token_from_link(&mail.text).ok_or("no link in the mail")?;
    // The host's sign-in returned Bob's OpenID Connect subject: attach it (D28).
    let bob_sub = IdentityId::parse("oidc|bob-4711")?;
    let bob_user = app
        .accept_invitation_as(&token, "bob@acme.test", bob_sub.clone())
        .await?;
    show(&bob_user, "accepted");

    let edit = Permission::new(Category::Conversations, Action::Edit);
    let d = app.authorize(tenant, bob_user.id, edit.into()).await?;
    println!(
        "-> can bob edit conversations? {} ({:?})",
        d.is_allowed(),
        d.reason()
    );

    // Editing the template reaches bob at his next check.
    app.edit_template(
        tenant,
        admin,
        agent.id,
        &TemplateEdit {
            name: None,
            permissions: Some("conversations:view".parse()?),
        },
    )
    .await?;
    let d = app.authorize(tenant, bob_user.id, edit.into()).await?;
    println!(
        "-> after the template edit: {} ({:?})",
        d.is_allowed(),
        d.reason()
    );

    // Suspend bob; a suspended user holds nothing.
    let suspended = app
        .edit_user(
            tenant,
            admin,
            bob_user.id,
            &UserEdit {
                status: Some(Status::Suspended),
                ..UserEdit::default()
            },
        )
        .await?;
    show(&suspended, "edited");

    // Carol lost her mail: resend.
    app.resend_invitation(tenant, admin, carol.user.id).await?;
    println!(
        "-> invitation resent to carol ({} mails sent so far)",
        mailer.sent().len()
    );
    print_table(
        &app,
        tenant,
        "after accept, template edit, suspend and resend",
    )
    .await?;

    // Delete carol: the seat is freed; a tombstone keeps her records attributable.
    let tomb = app.delete_user(tenant, admin, carol.user.id).await?;
    println!(
        "-> deleted {} at {}",
        tomb.email,
        when(Some(tomb.deleted_at))
    );
    print_table(&app, tenant, "after deleting carol").await?;

    // Bob is also the first admin of another tenant: one person, two users (D28).
    app.create_tenant("Bob's Bakery", None, Email::parse("bob@acme.test")?)
        .await?;
    let bobs = app
        .memberships_by_email(&Email::parse("BOB@acme.test")?, None, 50)
        .await?;
    println!(
        "\n== bob@acme.test is a user of {} tenants",
        bobs.items.len()
    );
    for m in &bobs.items {
        println!(
            "  {:<16} {:<6} {}",
            m.tenant_name,
            m.role.as_str(),
            m.status.as_str()
        );
    }
    let by_sub = app.memberships_by_identity(&bob_sub, None, 50).await?;
    println!("-> by his subject: {} tenant(s)", by_sub.items.len());
    let tenants = app.tenants(None, 50).await?;
    println!("-> tenants: {}", tenants.items.len());

    let log = app.audit_log(tenant, ActorRef::System, 0, 100).await?;
    println!("\nAudit log: {} events", log.len());
    for r in log {
        println!("  #{:<3} {:?} {:?}", r.seq, r.event.action, r.event.outcome);
    }
    Ok(())
}
