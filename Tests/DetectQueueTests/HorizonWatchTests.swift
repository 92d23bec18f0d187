import DetectQueue
import Foundation
import Testing

/// How long a worker says vacuum's horizon has been held, and when it logs: from the holder's start when the role
/// may see it, else from when the worker first saw that holder; once past five minutes, and once when it ends.
@Suite("Held vacuum horizon")
struct HorizonWatchTests {
    static let start = Date(timeIntervalSince1970: 1_800_000_000)

    static func horizon(_ holder: VacuumHorizon.Holder?, at seconds: Double, since: Date? = nil, heldAt: String = "725") -> VacuumHorizon {
        VacuumHorizon(
            holder: holder, heldAt: holder == nil ? nil : heldAt, ageTransactions: holder == nil ? 0 : 10, since: since,
            readAt: start.addingTimeInterval(seconds),
            deadRequestVersions: 0, claimIndexBytes: 8_192
        )
    }

    static let report = VacuumHorizon.Holder.session(pid: 41, role: "reports", application: nil, state: nil)

    @Test func aHiddenStartIsTimedFromTheFirstSightingAndANewHolderStartsAgain() async {
        let watch = HorizonWatch()
        #expect(await watch.heldSeconds(Self.horizon(Self.report, at: 0)) == 0)
        #expect(await watch.heldSeconds(Self.horizon(Self.report, at: 42)) == 42)
        #expect(await watch.heldSeconds(Self.horizon(.replicationSlot(name: "standby"), at: 50)) == 0, "another holder")
        #expect(await watch.heldSeconds(Self.horizon(.replicationSlot(name: "standby"), at: 61)) == 11)
        #expect(await watch.heldSeconds(Self.horizon(nil, at: 70)) == 0)
    }

    @Test func theSameSessionWithANewerSnapshotHoldsANewHorizon() async {
        let watch = HorizonWatch()
        #expect(await watch.heldSeconds(Self.horizon(Self.report, at: 0)) == 0)
        #expect(await watch.heldSeconds(Self.horizon(Self.report, at: 200)) == 200)
        #expect(await watch.heldSeconds(Self.horizon(Self.report, at: 250, heldAt: "90210")) == 0, "its next transaction")
        #expect(await watch.heldSeconds(Self.horizon(Self.report, at: 260, heldAt: "90210")) == 10)
    }

    @Test func aKnownStartCountsFromThereEvenAtTheFirstSighting() async {
        let watch = HorizonWatch()
        #expect(await watch.heldSeconds(Self.horizon(Self.report, at: 100, since: Self.start)) == 100)
    }

    @Test func theWorkerWarnsOncePastFiveMinutesAndOnceWhenItEnds() async {
        let watch = HorizonWatch()
        #expect(await watch.transition(Self.horizon(Self.report, at: 0)) == nil)
        #expect(await watch.transition(Self.horizon(Self.report, at: 299)) == nil)
        #expect(await watch.transition(Self.horizon(Self.report, at: 300)) == true)
        #expect(await watch.transition(Self.horizon(Self.report, at: 900)) == nil, "said once")
        #expect(await watch.transition(Self.horizon(nil, at: 901)) == false)
        #expect(await watch.transition(Self.horizon(nil, at: 2_000)) == nil)
    }

    @Test func statusWarnsByTimeWhenItIsKnownAndElseByAMillionTransactions() {
        var horizon = Self.horizon(Self.report, at: 299, since: Self.start)
        #expect(!horizon.warrantsWarning)
        horizon.readAt = Self.start.addingTimeInterval(300)
        #expect(horizon.warrantsWarning)
        horizon.since = nil
        #expect(!horizon.warrantsWarning, "ten transactions, start unknown")
        horizon.ageTransactions = 1_000_000
        #expect(horizon.warrantsWarning)
        horizon.holder = nil
        #expect(!horizon.warrantsWarning, "nothing holds it")
    }
}
