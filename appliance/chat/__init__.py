"""The Twitch chat bridge (teletype-chat.service, `teletype chat`): a twitchio bot that
reads chat and answers it through the engine's API.
"""
