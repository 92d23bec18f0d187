import DetectQueue
import Foundation
import Testing

@Suite("The request state machine, event by event")
struct RequestStateMachineTests {
    static let events: [RequestEvent] = [
        .claimed(workerID: "w"), .accepted(remoteUUID: "u"), .adopted(remoteUUID: "u"), .completed,
        .failedRetryably(reason: "503", retryAt: Date(timeIntervalSince1970: 0)), .failedPermanently(reason: "400"),
        .leaseExpired, .released, .cancelled, .retriedByUser,
    ]

    /// What each (state, event) pair must give, with attempts left and without; nil is refused.
    static func expected(_ state: RequestState, _ event: RequestEvent, attemptsLeft: Bool) -> RequestState? {
        switch (state, event) {
        case (.queued, .claimed), (.retrying, .claimed): return .submitting
        case (.submitting, .accepted), (.submitting, .adopted), (.retrying, .adopted): return .awaitingResult
        case (.submitting, .completed), (.awaitingResult, .completed): return .completed
        case (.submitting, .failedRetryably), (.submitting, .leaseExpired): return attemptsLeft ? .retrying : .failed
        case (.submitting, .failedPermanently), (.awaitingResult, .failedPermanently): return .failed
        case (.submitting, .released): return .queued
        case (.completed, .cancelled), (.failed, .cancelled), (.cancelled, .cancelled): return nil
        case (_, .cancelled): return .cancelled
        case (.failed, .retriedByUser): return .queued
        default: return nil
        }
    }

    @Test(arguments: RequestState.allCases, [true, false])
    func everyEventInEveryState(state: RequestState, attemptsLeft: Bool) {
        for event in Self.events {
            let want = Self.expected(state, event, attemptsLeft: attemptsLeft)
            do {
                let next = try RequestStateMachine.transition(from: state, on: event, attemptsLeft: attemptsLeft)
                #expect(next == want, "\(state) on \(event.name)")
                #expect(state.canChange(to: next), "the result is a legal transition of the table the trigger enforces")
            } catch {
                #expect(want == nil, "\(state) on \(event.name) was refused: \(error)")
                #expect(error.description.contains(state.rawValue))
            }
        }
    }

    @Test func everyLegalTransitionIsReachableByAnEvent() {
        var reached: Set<String> = []
        for state in RequestState.allCases {
            for event in Self.events {
                for attemptsLeft in [true, false] {
                    if let next = try? RequestStateMachine.transition(from: state, on: event, attemptsLeft: attemptsLeft) {
                        reached.insert("\(state)->\(next)")
                    }
                }
            }
        }
        let table = Set(RequestState.allCases.flatMap { from in from.successors.map { "\(from)->\($0)" } })
        #expect(reached == table, "no transition in the table is dead, none outside it is produced")
    }

    @Test func terminalStatesTakeNoEventButARetryOfAFailure() throws {
        for event in Self.events {
            #expect(throws: RequestStateMachine.IllegalEvent.self) {
                try RequestStateMachine.transition(from: .completed, on: event, attemptsLeft: true)
            }
            #expect(throws: RequestStateMachine.IllegalEvent.self) {
                try RequestStateMachine.transition(from: .cancelled, on: event, attemptsLeft: true)
            }
        }
        #expect(try RequestStateMachine.transition(from: .failed, on: .retriedByUser, attemptsLeft: false) == .queued)
    }
}
