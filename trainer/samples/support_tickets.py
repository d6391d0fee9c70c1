"""Support tickets to route to a team: a classification sample with 5 labels, 120 tickets each.

Each ticket joins an optional greeting, a problem statement and a detail that belong to its team, and an optional
closing, in one of several sentence shapes, with random order numbers, devices and dates. The problem and detail
phrases use vocabulary typical of each team (invoices and refunds for billing, crashes and errors for technical...),
so a small encoder learns the routing; greetings, closings and shapes are shared, so it must read the problem.
"""
from __future__ import annotations

import random
import re

PER_LABEL = 120

GREETINGS = ["", "Hi,", "Hello,", "Hello team,", "Good morning,", "Hey there,", "Dear support,", "Hi support team,",
             "Greetings,", "To whom it may concern,"]
CLOSINGS = ["", "Thanks.", "Thank you!", "Please help.", "Any help is appreciated.", "Regards, {name}",
            "Thanks in advance, {name}", "This is urgent.", "Cheers, {name}", "Looking forward to your reply."]
NAMES = ["Ana", "Ben", "Chloe", "Dmitri", "Emeka", "Fatima", "Goran", "Hana", "Ivan", "Julia", "Kenji", "Lucia",
         "Mateo", "Noor", "Olga", "Priya", "Quentin", "Rosa", "Sven", "Tariq"]
DEVICES = ["iPhone", "Android phone", "iPad", "Windows laptop", "MacBook", "Chromebook", "desktop browser"]
MONTHS = ["January", "February", "March", "April", "May", "June", "July", "August", "September", "October",
          "November", "December"]

PROBLEMS = {
    "billing": [
        "I was charged twice for my subscription this month",
        "my invoice {order} shows the wrong amount",
        "the refund for order {order} has still not reached my bank account",
        "please update the credit card you have on file for payments",
        "why did the price of my monthly plan go up without notice",
        "I need a VAT invoice for the payment made in {month}",
        "I want to cancel the automatic renewal before the next charge",
        "the discount coupon was not applied to my last payment",
        "my card was declined but the money still left my account",
        "I would like to switch from annual billing to monthly billing",
        "there is a charge on my statement I do not recognise",
        "can you send me a receipt for the upgrade I paid for",
        "I was billed for three seats but we only use two",
        "the tax on my invoice is calculated incorrectly",
        "I paid by bank transfer and the payment is not showing as received",
    ],
    "technical": [
        "the app crashes every time I open the settings screen",
        "the dashboard shows error 500 since this morning",
        "syncing stopped working after the latest update on my {device}",
        "the export button does nothing when I click it",
        "push notifications no longer arrive on my {device}",
        "reports take minutes to load and then time out",
        "uploading an attachment freezes the whole editor",
        "search returns no results even for exact file names",
        "the Slack integration throws a timeout error",
        "the mobile app shows a blank white screen after launch",
        "charts render with missing data points since version 4.2",
        "the API returns a 502 bad gateway for every request",
        "the calendar widget displays events on the wrong day because of a timezone bug",
        "offline mode corrupts my drafts when the connection drops",
        "the import from spreadsheet fails with an unknown error",
    ],
    "account": [
        "I cannot log in even though my password is correct",
        "the password reset link in the email has expired",
        "the two-factor authentication code never arrives by SMS",
        "I need to change the email address on my profile",
        "my account got locked after too many sign-in attempts",
        "please add a new colleague to our team workspace",
        "I want to delete my account and all personal data",
        "I lost my phone with the authenticator app and cannot sign in",
        "the username I want says it is already taken",
        "I have two accounts and would like to merge them into one",
        "how do I transfer ownership of the workspace to {name}",
        "single sign-on with our company directory rejects my login",
        "I never received the verification email for my new account",
        "please remove a former employee's access to our organisation",
        "my profile still shows my old name after I changed it",
    ],
    "shipping": [
        "my package from order {order} has not arrived yet",
        "the tracking number shows no updates for a week",
        "the parcel was delivered to the wrong address",
        "the box arrived damaged and the item inside is broken",
        "can I change the delivery address for order {order}",
        "the courier says delivered but nothing is at my door",
        "how long does international shipping to Canada take",
        "one item is missing from my shipment",
        "I was asked to pay customs fees on delivery",
        "the delivery was scheduled for {month} 3 and never came",
        "can I pick up my order at the warehouse instead of delivery",
        "the carrier returned my parcel to the sender",
        "I received someone else's package with order {order}",
        "express shipping took longer than standard would have",
        "the delivery driver left the parcel out in the rain",
    ],
    "feature_request": [
        "it would be great if you added a dark mode",
        "please consider supporting export to PDF",
        "could you add a calendar view for planning",
        "we would love keyboard shortcuts for common actions",
        "suggestion: let us create custom tags and filters",
        "are there plans for a public API for reports",
        "it would help a lot to have recurring tasks",
        "please add an option to schedule posts in advance",
        "I wish the editor supported markdown tables",
        "an integration with Microsoft Teams would be a great addition",
        "could you allow more than five dashboards per team",
        "a bulk edit feature would save us hours every week",
        "we would appreciate a version history for documents",
        "please let admins customise the email templates",
        "an offline desktop version would be a nice improvement",
    ],
}

DETAILS = {
    "billing": ["The amount was {amount} dollars.", "I have attached the bank statement.",
                "Our finance department needs this corrected for accounting.", "Please refund the difference.",
                "The payment method is a Visa card ending in {digits}.", "This happened on the {month} invoice.",
                "I expected a prorated charge.", "We are on the business plan."],
    "technical": ["I already reinstalled the app and cleared the cache.", "It started after the update yesterday.",
                  "I am using the {device} with the latest version.", "Here is the error code: E{digits}.",
                  "Restarting does not help.", "It happens in both Chrome and Firefox.",
                  "The console log shows an exception.", "Other users on my team see the same bug."],
    "account": ["My login email is {name}@example.com.", "I tried resetting the password twice.",
                "I am the admin of our workspace.", "I no longer have access to my old phone number.",
                "Please verify my identity another way.", "The sign-in page just reloads.",
                "Our company uses Okta for sign-in.", "I created the account in {month}."],
    "shipping": ["The order number is {order}.", "I ordered it on {month} 12.", "The courier was DHL.",
                 "I have photos of the damaged packaging.", "It was a gift so timing matters.",
                 "The tracking page says in transit.", "I live in an apartment with a front desk.",
                 "Delivery was supposed to take three days."],
    "feature_request": ["Many of our team members asked for this.", "Competitor tools already offer it.",
                        "It would make our weekly workflow much faster.", "We would even pay extra for it.",
                        "This would help us roll the product out to more teams.", "Just an idea for the roadmap.",
                        "Happy to give feedback on a beta.", "Thanks for building a great product."],
}

SHAPES = [
    "{greeting} {problem}. {detail} {closing}",
    "{greeting} {detail} Also, {problem}. {closing}",
    "{problem}. {detail}",
    "{greeting} {problem}! {closing}",
    "Subject: {problem_title}\n\n{greeting} {problem}. {detail} {closing}",
    "{greeting} quick question: {problem}? {closing}",
    "{problem} - {detail_lower} {closing}",
    "URGENT: {problem}. {detail}",
]
LABELS = sorted(PROBLEMS)


def _ticket(rng: random.Random, label: str) -> str:
    values = {"order": f"#{rng.randint(10000, 99999)}", "device": rng.choice(DEVICES), "month": rng.choice(MONTHS),
              "name": rng.choice(NAMES), "amount": rng.randint(5, 900), "digits": rng.randint(1000, 9999)}
    problem = rng.choice(PROBLEMS[label]).format(**values)
    detail = rng.choice(DETAILS[label]).format(**values)
    text = rng.choice(SHAPES).format(
        greeting=rng.choice(GREETINGS), closing=rng.choice(CLOSINGS).format(**values), problem=problem,
        problem_title=" ".join(problem.split()[:6]).capitalize(), detail=detail, detail_lower=detail[:1].lower() + detail[1:])
    text = re.sub(r" *\n *", "\n", re.sub(r" {2,}", " ", text)).strip()  # an empty greeting leaves spaces
    return text[:1].upper() + text[1:]


def rows(seed: int = 0) -> list[dict]:
    """PER_LABEL distinct tickets per label, shuffled: [{"text": ..., "label": ...}]."""
    rng = random.Random(seed)
    result = []
    for label in LABELS:
        seen: set[str] = set()
        while len(seen) < PER_LABEL:
            text = _ticket(rng, label)
            if text not in seen:
                seen.add(text)
                result.append({"text": text, "label": label})
    rng.shuffle(result)
    return result
